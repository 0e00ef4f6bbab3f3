"""Commands that only parse arguments or list names import no torch/CompressAI/timm, so they answer at once
(benchmarks/bench_startup.py measures the wall time)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "latentstore" / "data" / "demo-imagenet")   # a dataset root apart from --out

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


@pytest.mark.parametrize("argv", [
    ["latentstore", "build", "--help"],
    ["latentstore", "build", "--coder", "nope", "--quality", "3", "--dataset", "imagefolder", "--root", ".",
     "--out", "never-made"],
    ["latentstore", "build", "--coder", "cheng2020", "--quality", "9", "--dataset", "imagefolder", "--root", ".",
     "--out", "never-made"],
    ["latentstore", "models"],
    # argument errors BuildConfig.checked() finds with plain-data tables, before the codec import
    ["latentstore", "build", "--coder", "cheng2020", "--quality", "3", "--dataset", "imagefolder", "--root",
     DEMO, "--out", "never-made", "--split", "val", "--variants", "3"],
    ["latentstore", "build", "--coder", "cheng2020", "--quality", "3", "--dataset", "imagefolder", "--root",
     DEMO, "--out", "never-made", "--teacher", "resnet18", "--teacher-strides", "8,x"],
    ["latentstore", "build", "--coder", "cheng2020", "--quality", "3", "--dataset", "imagefolder", "--root",
     DEMO, "--out", "never-made", "--teacher", "resnet18", "--teacher-dtype", "int4"],
    ["latentstore", "build", "--coder", "cheng2020", "--quality", "3", "--dataset", "imagefolder", "--root",
     "no-such-root", "--out", "never-made"],
    ["latentstore", "build", "--coder", "cheng2020", "--quality", "3", "--dataset", "imagefolder", "--root",
     DEMO, "--out", "never-made", "--teacher", "resnet5O"],
])
def test_cli_help_argument_errors_and_model_listing_import_no_codec(argv):
    assert heavy_imports(argv, how="module", target="latentstore") == ""
    assert not (ROOT / "never-made").exists()


@pytest.mark.parametrize("args,message", [
    (["--split", "val", "--variants", "3"], "--variants 3 with val augmentation (deterministic)"),
    (["--teacher", "resnet18", "--teacher-strides", "8,x"], "'8,x' is not a comma-separated list of integers"),
    (["--teacher", "resnet18", "--teacher-dtype", "int4"], "'int4' is not one of 'float16', 'bfloat16', 'int8'"),
    (["--split", "../x"], "Invalid --split '../x'"),
    (["--teacher", "resnet5O"], "Unknown --teacher 'resnet5O': timm 1.0.31 has no such model (did you mean resnet50"),
])
def test_build_argument_errors_are_one_line_naming_the_flag(capsys, args, message):
    from latentstore.commands.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["build", "--coder", "cheng2020", "--quality", "3", "--dataset", "imagefolder", "--root", DEMO,
              "--out", str(ROOT / "never-made"), *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err and not (ROOT / "never-made").exists()


def test_light_name_tables_agree_with_the_registries():
    from latentstore.coders.names import ALIASES, QUALITIES
    from latentstore.coders.registry import ALIASES as CODER_ALIASES, CODERS
    from latentstore.models.names import AA_FAMILIES, NAMES
    from latentstore.models import REGISTRY
    from latentstore.models.adapt import AA_RULES

    assert {name: tuple(spec.qualities) for name, spec in CODERS.items()} == \
        {name: tuple(q) for name, q in QUALITIES.items()} and CODER_ALIASES is ALIASES
    assert [e.pattern for e in REGISTRY] == list(NAMES) and tuple(sorted(AA_RULES)) == AA_FAMILIES
    assert all((e.task, e.description) == NAMES[e.pattern] for e in REGISTRY)


def test_build_config_choices_agree_with_the_tables_they_name():
    from latentstore.build.augment import SAMPLERS
    from latentstore.build.config import AUGMENTATIONS, DATASETS, FORMATS
    from latentstore.build.sources import OPENERS
    from latentstore.store.writers import WRITERS
    from latentstore.teacher import dtypes, load, names

    assert (tuple(SAMPLERS), tuple(OPENERS), tuple(WRITERS)) == (AUGMENTATIONS, DATASETS, FORMATS)
    assert dtypes.TEACHER_DTYPES is names.TEACHER_DTYPES and load.resolve_teacher_args is names.resolve_teacher_args


def test_models_lists_names_and_counts_on_request(capsys):
    from latentstore.commands.cli import main

    main(["models"])
    out = capsys.readouterr().out
    assert "resnet50-aa" in out and "pspnet50-aa" in out and "`--all`" in out and "MACs |" not in out


def test_the_timm_name_table_is_the_installed_timm_s():
    """latentstore/data/timm_models.txt refuses a misspelt --teacher without timm: it must list exactly the
    pinned timm's models (after a pin change: .venv/bin/python scripts/timm_models.py)."""
    import timm
    from latentstore.teacher.names import check_teacher_name, timm_models

    assert timm_models() == (timm.__version__, frozenset(timm.list_models()))
    for name in ("resnet50", "resnet50.a1_in1k", "pspnet50", None):  # tagged names are timm's to judge
        check_teacher_name(name)
