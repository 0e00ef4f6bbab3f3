"""`latentstore verify --decode`: the user's own exactness check, through the CLI."""
import json

import numpy as np
import pytest
import torch

import latentstore.build.run
import latentstore.build.generic_encoder
from latentstore.build.run import BuildConfig, build
from latentstore.commands.cli import main
from latentstore.build.encoder import Encoder
from latentstore.errors import ConfigError


def run(capsys, *args):
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out + out.err


def config(root, out, **kw) -> BuildConfig:
    base = dict(coder="cheng2020", quality=1, weights="untrained", dataset="imagefolder", root=str(root),
                split="train", out=str(out), variants=1, crop=64, shard_size=4, y_hat_dtype="float32")
    return BuildConfig(**{**base, **kw})


class UlpOffEncoder(Encoder):
    """What revision 1 stored: the right strings, ŷ an ulp off the decoder's in places."""

    def encode(self, x):
        encoded = super().encode(x)
        for enc in encoded:
            enc.y_hat[0, 0, 0] = np.nextafter(enc.y_hat[0, 0, 0], np.float32(np.inf))
        return encoded


def test_decode_all_runs_at_the_stores_thread_count(tiny_folder, tmp_path, store_cache, capsys):
    store = tmp_path / "s"
    store_cache(config(tiny_folder, store))
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the caller's count must not reach the decoder
    try:
        code, out = run(capsys, "verify", store, "--decode", "all", "--quiet")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert code == 0, out
    assert "6 samples checked, 6 decoded by CompressAI: OK" in out
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["created_by"]["torch_threads"] == 1 and manifest["created_by"]["encoder_revision"] == 2


def test_decode_takes_a_count_or_all(tiny_folder, tmp_path, store_cache, capsys):
    store = tmp_path / "s"
    store_cache(config(tiny_folder, store))
    code, out = run(capsys, "verify", store, "--decode", "some")
    assert code == 2 and "'some' is neither a number nor 'all'" in out


def test_a_store_of_another_encoder_revision_is_named_with_what_to_do(tiny_folder, tmp_path, capsys, monkeypatch):
    store = tmp_path / "s"
    monkeypatch.setattr(latentstore.build.generic_encoder, "Encoder", UlpOffEncoder)  # what make_encoder builds
    monkeypatch.setattr(latentstore.build.run, "ENCODER_REVISION", 1)
    build(config(tiny_folder, store), progress=False)
    monkeypatch.undo()
    code, out = run(capsys, "verify", store, "--quiet")
    assert code == 0, out  # the store is intact: only decoding shows the difference
    code, out = run(capsys, "verify", store, "--decode", "all", "--quiet")
    assert code == 1
    bad = [line for line in out.splitlines() if line.startswith("BAD")]
    assert len(bad) == 6
    assert "CompressAI decodes a different ŷ" in bad[0] and "encoder revision 1" in bad[0]
    assert "rebuild it with the same command into a new --out" in bad[0]
    code, out = run(capsys, "info", store)
    assert code == 0 and "ANOTHER ENCODER REVISION (this latentstore writes 2)" in out


def test_a_build_started_by_another_encoder_revision_is_not_resumed(tiny_folder, tmp_path, store_cache):
    store = tmp_path / "s"
    store_cache(config(tiny_folder, store))
    started = store / "build-train.json"
    record = json.loads(started.read_text())
    record["encoder_revision"] = 1
    started.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="encoder revision 1 .* new --out"):
        build(config(tiny_folder, store), progress=False)
