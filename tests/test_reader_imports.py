"""The reader side runs where CompressAI cannot be imported (a training node has only the base install).

A store is built here (this process may load the codec); then a fresh interpreter in which
``compressai``, ``latentstore.coders.registry`` and ``latentstore.build.encoder`` are unimportable reads it with
``open_store`` (latents and teacher maps), trains one step of train/classify.py with knowledge
transfer from the named teacher (its weights checked), evaluates the checkpoint with
eval/classify.py and runs ``latentstore info`` and ``latentstore verify`` (without ``--decode``).
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import tiny_store


ROOT = Path(__file__).resolve().parents[1]

READER = textwrap.dedent('''
    import importlib.abc, importlib.util, sys
    from pathlib import Path

    BLOCKED = ("compressai", "latentstore.coders.registry", "latentstore.build.encoder")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ModuleNotFoundError(f"{name} is blocked: the reader side must not import it", name=name)
            return None

    sys.meta_path.insert(0, Block())
    try:
        import compressai  # noqa: F401
        raise SystemExit("the blocker does not block")
    except ModuleNotFoundError:
        pass

    root, store, run = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

    def script(path):
        spec = importlib.util.spec_from_file_location(path.stem + "_script", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    from latentstore import open_store

    samples = list(open_store(store, fields=("y_hat", "label", "teacher_s8", "teacher_s32")))
    assert len(samples) == 6 and all(s["teacher_s8"].dtype.is_floating_point for s in samples)
    print("open_store", len(samples), tuple(samples[0]["teacher_s32"].shape))

    script(root / "train" / "classify.py").main(
        ["--store", store, "--out", str(run), "--model", "resnet18-aa", "--epochs", "1", "--batch-size", "2",
         "--workers", "0", "--max-steps", "1", "--no-progress", "--transfer", "mse", "--beta", "0.5",
         "--teacher", "resnet18", "--teacher-weights", "untrained"])
    assert (run / "last.pt").is_file()

    rc = script(root / "eval" / "classify.py").main(
        ["--store", store, "--checkpoint", str(run / "last.pt"), "--split", "train", "--device", "cpu",
         "--quiet"])
    assert rc == 0 and (run / "eval.json").is_file()

    from latentstore.commands.cli import main
    for command in (["info", store], ["verify", store]):
        try:
            main(command)
        except SystemExit as exc:
            assert not exc.code, (command, exc.code)

    loaded = [m for m in sys.modules if m == "compressai" or m.startswith(("compressai.", "latentstore.coders.registry",
                                                                           "latentstore.build.encoder"))]
    assert not loaded, loaded
    print("reader side ran without compressai")
''')


@pytest.fixture(scope="module")
def teacher_store(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("reader-store")
    tiny_store(tiny_folder, out, shard_size=3, teacher="resnet18", teacher_weights="untrained",
               teacher_strides=(8, 16, 32), teacher_dtype="int8")
    return out


def test_reader_trainer_eval_info_and_verify_run_without_compressai(teacher_store, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", READER, str(ROOT), str(teacher_store), str(tmp_path / "run")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "reader side ran without compressai" in result.stdout
    assert "coder" in result.stdout and "teacher   resnet18" in result.stdout  # info's summary
    assert "samples checked" in result.stdout and "OK" in result.stdout  # verify's verdict
