"""Commands that only parse arguments or list names import no torch/CompressAI/timm, so they answer at once
(benchmarks/bench_startup.py measures the wall time)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_{how}({target!r}, run_name="__main__")
except SystemExit:
    pass
heavy = [m for m in ("torch", "compressai", "timm") if m in sys.modules]
print("HEAVY", ",".join(heavy))
"""


def heavy_imports(argv, how="path", target=None) -> str:
    code = PROBE.format(argv=argv, how=how, target=target or argv[0])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120).stdout
    return out.strip().splitlines()[-1].removeprefix("HEAVY").strip()


@pytest.mark.parametrize("script", ["train/classify.py", "train/segment.py"])
def test_trainer_help_and_flag_errors_import_no_torch(script):
    assert heavy_imports([script, "--help"]) == ""
    assert heavy_imports([script, "--store", "s", "--out", "o", "--lerning-rate", "1"]) == ""
