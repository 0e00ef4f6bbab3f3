"""A user's own CompressionModel (tests/user_coder.py, copied where the test can change it) through the
CLI: build, exact against its own compress()/decompress(), verify --decode, train, then a changed
source or weights refused by a resumed build, verify --decode and add-teacher, naming which.
Also: an ELIC store (M = 320, the generic path) trains with the -aa adaptation.
"""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_store
from latentstore.commands.cli import main
from test_exact import reference, replay
from test_generic import read_container
from test_train import args as train_args, classify, losses
from latentstore.store.readers import Sample, iter_shard

pytestmark = pytest.mark.slow
MODULE = "my_codec"


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """tests/user_coder.py as the importable module my_codec, in a folder of its own on the path."""
    folder = tmp_path / "code"
    folder.mkdir()
    shutil.copy(Path(__file__).with_name("user_coder.py"), folder / f"{MODULE}.py")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    sys.modules.pop(MODULE, None)
    yield folder / f"{MODULE}.py"
    sys.modules.pop(MODULE, None)


def run(*argv, capsys=None):
    """The CLI in this process: (exit code, stderr)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err if capsys else ""


def samples(store):
    manifest = json.loads((store / "manifest.json").read_text())
    for shard in manifest["splits"]["train"]["shards"]:
        yield from map(Sample.as_item, iter_shard(store / shard["path"], shard["path"], shard["samples"], record=shard))


def test_a_custom_coder_builds_exactly_verifies_trains_and_refuses_a_changed_source(
        user_module, tiny_folder, tmp_path, capsys):
    import my_codec

    torch.manual_seed(0)
    model = my_codec.TwoHalvesHyperprior()
    model.update(force=True)
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    store = tmp_path / "store"
    build = ["build", "--coder", f"{MODULE}:TwoHalvesHyperprior", "--quality", 1, "--weights", weights,
             "--dataset", "imagefolder", "--root", tiny_folder, "--crop", 64, "--shard-size", 2,
             "--y-hat-dtype", "float32", "--out", store, "--quiet"]
    assert run(*build, capsys=capsys) == (0, "")

    manifest = json.loads((store / "manifest.json").read_text())
    code = manifest["coder"]["weights"]["code"]
    assert (code["module"], code["qualname"]) == (MODULE, "TwoHalvesHyperprior")
    assert code["sha256"] == __import__("hashlib").sha256(user_module.read_bytes()).hexdigest()
    assert manifest["coder"]["path"] == "generic" and manifest["coder"]["channels"] == 24

    model.eval()
    count = 0
    for s in samples(store):
        meta = s["meta"]
        strings, y_hat = reference(model, replay(tiny_folder / meta["source"], meta["augment"]))
        assert read_container(s["y_string"])[0] == strings and "symbols" not in s
        assert s["y_hat"].tobytes() == y_hat.astype(np.float32).tobytes()
        assert len(np.unique(y_hat)) > 3, "trivial ŷ would prove nothing"
        count += 1
    assert count == 6
    assert run("verify", store, "--decode", 6, "--quiet", capsys=capsys)[0] == 0

    out = tmp_path / "run"
    classify.main(train_args(store, out, "--epochs", "1"))
    assert len(losses(out)) >= 3

    # A changed source: the resumed build, verify --decode and add-teacher refuse it, naming the source.
    user_module.write_text(user_module.read_text() + "\n# edited\n")
    code, err = run(*build, capsys=capsys)
    assert code == 2 and f"coder source {user_module}" in err and "coder weights differ" not in err
    code, err = run("verify", store, "--decode", 1, "--quiet", capsys=capsys)
    assert code == 2 and "The source of --coder my_codec:TwoHalvesHyperprior" in err
    code, err = run("add-teacher", store, "--teacher", "resnet18", "--teacher-weights", "untrained",
                    "--teacher-strides", "8", "--quiet", capsys=capsys)
    assert code == 2 and "The source of --coder my_codec:TwoHalvesHyperprior" in err

    # Other weights with the original source: refused naming the weights.
    shutil.copy(Path(__file__).with_name("user_coder.py"), user_module)
    torch.manual_seed(1)
    other = my_codec.TwoHalvesHyperprior()
    other.update(force=True)
    torch.save(other.state_dict(), weights)
    code, err = run(*build, capsys=capsys)
    assert code == 2 and "coder weights differ" in err and "coder source" not in err


def test_what_is_not_a_compression_model_is_refused_in_one_line(user_module, tiny_folder, tmp_path, capsys):
    code, err = run("build", "--coder", f"{MODULE}:NotACoder", "--quality", 1, "--weights", "untrained",
                    "--dataset", "imagefolder", "--root", tiny_folder, "--crop", 64, "--out", tmp_path / "s",
                    "--quiet", capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "a coder must be a compressai.models.CompressionModel with compress(), decompress() and a g_s" in err
    code, err = run("build", "--coder", f"{MODULE}:factory", "--quality", 1, "--weights", "untrained",
                    "--dataset", "imagefolder", "--root", tiny_folder, "--crop", 64, "--out", tmp_path / "f",
                    "--fields", "means", "--quiet", capsys=capsys)
    assert code == 2 and "do not expose means: drop it from --fields" in err


def test_an_elic_store_trains_with_the_adapted_model(tiny_folder, tmp_path):
    store = tiny_store(tiny_folder, tmp_path / "elic", coder="elic2022-official", shard_size=2)
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["splits"]["train"]["latent_shape"][0] == 320
    out = tmp_path / "run"
    classify.main(train_args(store, out, "--epochs", "1"))
    values = [float(v) for _, v in losses(out)]
    assert len(values) >= 3 and all(np.isfinite(values))
