"""Numerics modes: a weights identity no CPU dispatch changes, created_by.numerics, the portable pins
and the CLI's restart into them, and verify --decode's verdict where the numerics differ."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_config

from latentstore.store import numerics
from latentstore.build.run import build
from latentstore.commands.cli import main
from latentstore.errors import ConfigError, StoreError
from latentstore.store.numerics import PORTABLE_ENV, WrongNumerics

#: Each variable that changed float bits of the old weights identity or of a build on some machine.
DISPATCH_VARIABLES = {"MKL_CBWR": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                      "ATEN_CPU_CAPABILITY": "avx2"}


def unpinned(**extra) -> dict:
    """This environment without the portable pins (the tests' process runs with them), plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}, **extra}


def cli(*args, env=None, check=True) -> subprocess.CompletedProcess:
    """The latentstore command in a fresh interpreter, with `env`."""
    done = subprocess.run([sys.executable, "-m", "latentstore", *map(str, args)], env=env or unpinned(),
                          capture_output=True, text=True, timeout=300)
    assert not check or done.returncode == 0, done.stderr
    return done


WEIGHTS_ID = """
import sys
from latentstore.coders.registry import load_coder
from latentstore.teacher.load import load_teacher
ids = [load_coder("cheng2020-anchor", 1, w).weights["sha256"] for w in ("untrained", sys.argv[1])]
print(*ids, load_teacher("resnet18", "untrained", (8,)).weights["sha256"])
"""


@pytest.mark.slow
def test_the_weights_identity_is_the_same_under_every_dispatch_variable(checkpoint_factory):
    """Each variable in a subprocess of its own (they act only before torch loads), and none at all."""
    checkpoint = checkpoint_factory("cheng2020-anchor", 1)
    seen = {}
    for name, value in [(None, None), *DISPATCH_VARIABLES.items()]:
        env = unpinned(**({name: value} if name else {}))
        out = subprocess.run([sys.executable, "-c", WEIGHTS_ID, str(checkpoint)], env=env, capture_output=True,
                             text=True, check=True, timeout=300).stdout.split()
        seen[name or "none"] = out
    assert len({tuple(ids) for ids in seen.values()}) == 1, seen


def test_a_portable_build_records_its_pinned_numerics(tiny_folder, tmp_path, tiny_store_copy):
    store = tiny_store_copy(tiny_folder, tmp_path / "s")
    recorded = json.loads((store / "manifest.json").read_text())["created_by"]["numerics"]
    assert recorded["mode"] == "portable" and "cpu" not in recorded  # nothing that names the machine
    assert recorded["torch_cpu_capability"] == "AVX2" and recorded["onednn_isa"] == "Intel AVX2"
    assert recorded["mkl_cbwr"] == "COMPATIBLE,STRICT"
    assert {k: recorded["env"][k] for k in PORTABLE_ENV} == PORTABLE_ENV


def test_the_library_refuses_a_build_in_the_wrong_numerics(tiny_folder, tmp_path):
    """This process is pinned: a native build cannot run in it, and says how to start one that can."""
    with pytest.raises(WrongNumerics, match="without ATEN_CPU_CAPABILITY"):
        build(tiny_config(tiny_folder, tmp_path / "s", numerics="native"), progress=False)
    assert not (tmp_path / "s").exists()  # refused before anything was written


@pytest.mark.slow
def test_the_cli_restarts_in_the_numerics_a_build_asks_for(tiny_folder, tmp_path):
    """From an unpinned shell a portable build restarts itself pinned, and gives the bytes of a pinned
    in-process build; from this pinned process, a native build restarts without the pins."""
    args = ["build", "--coder", "mbt2018-mean", "--quality", "1", "--weights", "untrained", "--dataset",
            "imagefolder", "--root", tiny_folder, "--split", "train", "--crop", "64", "--quiet"]
    cli(*args, "--out", tmp_path / "from-shell")
    main([*map(str, args), "--out", str(tmp_path / "in-process")])
    for path in (tmp_path / "in-process" / "train").iterdir():
        if path.suffix == ".tar":
            assert path.read_bytes() == (tmp_path / "from-shell" / "train" / path.name).read_bytes(), path.name
    main([*map(str, args), "--out", str(tmp_path / "native"), "--numerics", "native"])
    native = json.loads((tmp_path / "native" / "manifest.json").read_text())["created_by"]["numerics"]
    assert native["mode"] == "native" and native["cpu"] == numerics.cpu_model()
    assert not set(PORTABLE_ENV) & set(native["env"])


@pytest.mark.slow
def test_verify_accepts_the_weights_of_a_store_built_under_mkl_cbwr_and_names_the_numerics(tiny_folder, tmp_path):
    """The issue's case: --weights untrained under MKL_CBWR=AVX2, verified on the same machine without it."""
    cli("build", "--coder", "cheng2020-anchor", "--quality", "1", "--weights", "untrained", "--dataset",
        "imagefolder", "--root", tiny_folder, "--split", "train", "--crop", "64", "--quiet", "--numerics", "native",
        "--out", tmp_path / "s", env=unpinned(MKL_CBWR="AVX2"))
    done = cli("verify", tmp_path / "s", "--decode", "all", "--quiet", check=False)
    assert "weights" not in done.stderr, done.stderr
    note = [line for line in done.stderr.splitlines() if line.startswith("NOTE")]
    assert note and "MKL_CBWR" in note[0], done.stderr
    bad = [line for line in done.stderr.splitlines() if line.startswith("BAD")]
    assert all("values, max |Δ|" in line and "numerics differ" in line for line in bad), bad
    assert done.stderr.index("NOTE") < (done.stderr.index("BAD") if bad else len(done.stderr))
    assert (done.returncode == 1) == bool(bad)


@pytest.mark.slow
def test_a_decode_difference_is_counted_in_the_stored_dtype(tiny_folder, tmp_path):
    """A native store checked under other oneDNN and MKL dispatch: where the floats differ, the verdict
    counts the differing float16 values and their largest difference, not float16's rounding step."""
    cli("build", "--coder", "cheng2020-anchor", "--quality", "1", "--weights", "untrained", "--dataset",
        "imagefolder", "--root", tiny_folder, "--split", "train", "--crop", "64", "--quiet", "--numerics", "native",
        "--out", tmp_path / "s")
    done = cli("verify", tmp_path / "s", "--decode", "all", "--quiet", check=False,
               env=unpinned(ONEDNN_MAX_CPU_ISA="SSE41", MKL_CBWR="COMPATIBLE"))
    assert "NOTE this machine's numerics differ" in done.stderr and "onednn_isa" in done.stderr
    for line in (ln for ln in done.stderr.splitlines() if ln.startswith("BAD")):
        count, worst = line.split("(", 1)[1].split(" of ")[0], float(line.split("max |Δ| ")[1].split(")")[0])
        assert int(count) < 2048 and 0 < worst < 1e-3, line  # a few values an ulp or so off, not all of them


def test_a_resume_in_the_other_numerics_is_refused(tiny_folder, tmp_path):
    out = tmp_path / "s"
    (out).mkdir()
    (out / "build-train.json").write_text(json.dumps({
        "config": {**tiny_config(tiny_folder, out).resolved().identity(), "numerics": "native"},
        "weights_sha256": "x", "encoder_revision": 2, "device": "cpu"}))
    with pytest.raises(ConfigError, match="--numerics: store has 'native', command has 'portable'"):
        build(tiny_config(tiny_folder, out), progress=False)


def test_seal_refuses_parts_of_other_numerics(tiny_folder, tmp_path):
    """Two parts of one native split built on CPUs of other families would mix their floats."""
    from latentstore.store.seal import part_file, seal

    out = tmp_path / "s"
    for i in range(2):
        build(tiny_config(tiny_folder, out, part=(i, 2), shard_size=2), progress=False)
    part = out / part_file("train", 1, 2)
    entry = json.loads(part.read_text())
    entry["created_by"]["numerics"]["onednn_isa"] = "Intel AVX-512"
    part.write_text(json.dumps(entry))
    with pytest.raises(StoreError, match="part 1/2 was encoded with other CPU numerics"):
        seal(out)


def test_info_says_which_cpus_give_the_same_bytes(tiny_folder, tmp_path, tiny_store_copy):
    from latentstore.commands.info import render, summarize

    text = render(summarize(tiny_store_copy(tiny_folder, tmp_path / "s")))
    assert "numerics portable" in text and "any x86-64 CPU with AVX2" in text
    assert "any CPU at the recorded versions" not in text


def test_the_numerics_that_differ_are_named():
    recorded = {"mode": "native", "cpu": "A", "torch_cpu_capability": "AVX512", "onednn_isa": "x", "mkl": "m",
                "mkl_cbwr": "OFF", "env": {}}
    running = {**recorded, "cpu": "B", "onednn_isa": "y"}
    assert numerics.differences(recorded, running) == ["cpu: A -> B", "onednn_isa: x -> y"]
    assert numerics.differences(None, {"mode": "portable"}) == ["mode: native -> portable"]


def test_portable_mode_is_refused_on_a_cpu_without_avx2(monkeypatch):
    monkeypatch.setattr(numerics, "cpu_flags", lambda: {"sse2", "avx"})
    with pytest.raises(ConfigError, match="lacks AVX2, FMA.*--numerics native"):
        numerics.require("portable")
