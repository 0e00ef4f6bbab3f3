"""End-to-end builds on tiny real photos, judged against CompressAI itself."""
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentstore.build.augment import apply
from latentstore.build.run import BuildConfig, build
from latentstore.coders.registry import CODERS, load_coder
from latentstore.errors import ConfigError, InputError
from latentstore.store.format import MANIFEST
from latentstore.build.images import load_rgb
from latentstore.store.readers import Sample, iter_shard
from test_exact import g_s_input


def config(root, out, **kw) -> BuildConfig:
    base = dict(coder="cheng2020", quality=1, weights="untrained", dataset="imagefolder", root=str(root),
                split="train", out=str(out), variants=2, crop=64, shard_size=4, y_hat_dtype="float32")
    return BuildConfig(**{**base, **kw})


def stored_samples(store: Path, split="train"):
    manifest = json.loads((store / MANIFEST).read_text())
    for shard in manifest["splits"][split]["shards"]:
        yield from map(Sample.as_item, iter_shard(store / shard["path"], shard["path"], shard["samples"]))


def shard_bytes(store: Path) -> dict:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.glob("*/*.tar"))}


def assert_exact(store: Path, root: Path, coder, count: int | None = None):
    """Stored strings == model.compress() on the replayed crop; stored ŷ == decompress()'s g_s input."""
    model = coder.model
    checked = 0
    for s in stored_samples(store):
        meta = s["meta"]
        crop = np.asarray(apply(load_rgb(root / meta["source"]), meta["augment"]))
        # The reference input, made here (not with the build's own to_input): fresh, contiguous, padded.
        pad = meta["padding"]
        x = torch.tensor(crop.transpose(2, 0, 1)[None], dtype=torch.float32) / 255.0
        x = torch.nn.functional.pad(x, (pad["left"], pad["right"], pad["top"], pad["bottom"]))
        assert x.shape[-2] % 64 == 0 and x.shape[-1] % 64 == 0
        with torch.no_grad():
            ref = model.compress(x)
        strings = [[s["y_string"]]] + ([[s["z_string"]]] if "z_string" in s else [])
        assert strings == [[st[0]] for st in ref["strings"]], s["__key__"]
        y_hat = g_s_input(model, lambda: model.decompress(strings, ref["shape"]))[1]
        assert s["y_hat"].dtype == np.float32
        np.testing.assert_array_equal(s["y_hat"], y_hat, err_msg=s["__key__"])
        assert len(np.unique(s["symbols"])) > 3, "symbols are trivial: the check would prove nothing"
        checked += 1
        if count and checked >= count:
            break
    assert checked


@pytest.mark.parametrize("coder", ["cheng2020-anchor", "bmshj2018-factorized"])
def test_store_is_exact_against_compressai(tiny_folder, tmp_path, coder):
    cfg = config(tiny_folder, tmp_path / "s", coder=coder, fields=("means", "scales"))
    if coder == "bmshj2018-factorized":
        cfg = replace(cfg, fields=())
    build(cfg, progress=False)
    assert_exact(tmp_path / "s", tiny_folder, load_coder(coder, 1, "untrained"))


@pytest.mark.slow
# Generic-path coders (ELIC, checkerboard) store a strings container: tests/test_exact_coders.py checks them.
@pytest.mark.parametrize("coder", sorted(name for name, spec in CODERS.items() if spec.path == "single-pass"
                                          and name not in ("cheng2020-anchor", "bmshj2018-factorized")))
def test_every_coder_is_exact_through_the_build(tiny_folder, tmp_path, coder):
    build(config(tiny_folder, tmp_path / "s", coder=coder, variants=1), progress=False)
    assert_exact(tmp_path / "s", tiny_folder, load_coder(coder, 1, "untrained"), count=3)


def test_manifest_balances_and_describes_the_store(tiny_folder, tmp_path):
    manifest = build(config(tiny_folder, tmp_path / "s", crop=48), progress=False)
    split = manifest["splits"]["train"]
    assert split["images_found"] == 6 == split["images_stored"] + len(split["rejects"])
    assert split["samples"] == 12 and split["variants"] == 2
    assert split["latent_shape"] == [128, 4, 4] and split["padding"]["top"] == 8
    assert split["valid_region"] == [0, 4, 0, 4]
    assert manifest["coder"]["weights"]["trained"] is False
    assert sum(s["samples"] for s in split["shards"]) == 12
    for s in stored_samples(tmp_path / "s"):
        m = s["meta"]
        assert m["bpp"] == pytest.approx(m["bits"] / (48 * 48))
        assert m["bits"] == 8 * (len(s["y_string"]) + len(s["z_string"]))
        assert s["label"] == m["label"] and "." not in s["__key__"]
    assert split["mean_bpp"] > 0


def test_bytes_do_not_depend_on_batch_size_or_workers(tiny_folder, tmp_path):
    build(config(tiny_folder, tmp_path / "a", batch_size=1), progress=False)
    build(config(tiny_folder, tmp_path / "b", batch_size=5, workers=2), progress=False)
    a, b = shard_bytes(tmp_path / "a"), shard_bytes(tmp_path / "b")
    assert a and a == b
    assert (tmp_path / "a" / MANIFEST).read_bytes() == (tmp_path / "b" / MANIFEST).read_bytes()


@pytest.mark.filterwarnings("ignore:entropy_parameters")
def test_batches_past_16_give_the_bytes_of_batch_1(tiny_folder, tmp_path):
    """One group of 18 crops: at batch 18 the autoregressive loop's convolutions take their
    batched paths (torch switches 1x1 convs to oneDNN at 16), at batch 1 none does."""
    cfg = config(tiny_folder, tmp_path / "a", shard_size=6, variants=3, batch_size=1)
    build(cfg, progress=False)
    build(replace(cfg, out=str(tmp_path / "b"), batch_size=18), progress=False)
    assert store_files(tmp_path / "a") == store_files(tmp_path / "b")


def store_files(store: Path) -> dict:
    """Every file of a store (shards, group records, part and split manifests) by relative path."""
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_bytes_do_not_depend_on_encoder_processes(tiny_folder, tmp_path):
    one = config(tiny_folder, tmp_path / "a", shard_size=2)
    build(one, progress=False)
    # Two processes over three groups, at another batch size: same shards, records and manifests.
    build(replace(one, out=str(tmp_path / "b"), encoders=2, batch_size=3), progress=False)
    a = store_files(tmp_path / "a")
    assert len(a) > 6 and a == store_files(tmp_path / "b")


@pytest.mark.slow  # 17 s: three builds that each spawn two encoder processes
def test_encoder_processes_resume_and_count_rejects(bad_folder, tmp_path):
    cfg = config(bad_folder, tmp_path / "a", variants=1, shard_size=3)
    build(cfg, progress=False)
    out = tmp_path / "b"
    build(replace(cfg, out=str(out), encoders=2), progress=False)
    (out / "train" / "group-000001.json").unlink()  # lost group: the rerun rebuilds only it
    (out / MANIFEST).unlink()
    build(replace(cfg, out=str(out), encoders=2), progress=False)
    assert store_files(out) == store_files(tmp_path / "a")
    with pytest.raises(InputError, match="more than --max-rejects 2"):
        build(replace(cfg, out=str(tmp_path / "c"), encoders=2, max_rejects=2), progress=False)
    assert not (tmp_path / "c" / MANIFEST).exists()


def test_gpu_device_and_workers_with_encoders_are_refused(tiny_folder, tmp_path):
    with pytest.raises(ConfigError, match="Invalid --device 'tpu': choose cpu or cuda"):
        build(config(tiny_folder, tmp_path / "s", device="tpu"), progress=False)
    with pytest.raises(ConfigError, match="--workers 2 with --encoders 2"):
        build(config(tiny_folder, tmp_path / "s", encoders=2, workers=2), progress=False)


def test_bytes_do_not_depend_on_the_callers_thread_count(tiny_folder, tmp_path):
    """Convolution bits change with torch's thread count; the encoder pins it (threads.STORE_THREADS)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        build(config(tiny_folder, tmp_path / "a", variants=1, crop=128), progress=False)
    finally:
        torch.set_num_threads(before)
    build(config(tiny_folder, tmp_path / "b", variants=1, crop=128), progress=False)
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")


def test_rerun_resumes_and_gives_identical_bytes(tiny_folder, tmp_path, store_cache):
    out = tmp_path / "s"
    store_cache(config(tiny_folder, out))
    reference = shard_bytes(out)
    # Simulate a crash that lost group 1 and left a stray temporary file.
    (out / "train" / "group-000001.json").unlink()
    (out / "train" / "v000-000001.tar").unlink()
    (out / MANIFEST).unlink()
    build(config(tiny_folder, out), progress=False)
    assert shard_bytes(out) == reference


def test_rerun_with_other_arguments_is_refused(tiny_folder, tmp_path, store_cache):
    store_cache(config(tiny_folder, tmp_path / "s"))
    with pytest.raises(ConfigError, match="--variants: store has 2, command has 3"):
        build(config(tiny_folder, tmp_path / "s", variants=3), progress=False)


def test_same_command_twice_gives_identical_shards(tiny_folder, tmp_path, store_cache):
    store_cache(config(tiny_folder, tmp_path / "a"))  # the cache's first copy is a build of its own
    build(config(tiny_folder, tmp_path / "b"), progress=False)
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")


@pytest.fixture
def bad_folder(tiny_folder, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(tiny_folder, root)
    good = (root / "train" / "class0" / "img0.png").read_bytes()
    (root / "train" / "class0" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "train" / "class0" / "empty.jpg").write_bytes(b"")
    (root / "train" / "class1" / "notes.jpg").write_text("not an image")
    Image.new("CMYK", (70, 70), (10, 200, 30, 0)).save(root / "train" / "class1" / "cmyk.jpg")
    Image.new("RGB", (1, 1), (255, 0, 0)).save(root / "train" / "class1" / "one_pixel.png")
    return root


def test_bad_inputs_are_listed_never_dropped(bad_folder, tmp_path):
    manifest = build(config(bad_folder, tmp_path / "s", variants=1), progress=False)
    split = manifest["splits"]["train"]
    assert split["images_found"] == 11
    assert split["images_stored"] == 8 and split["images_stored"] + len(split["rejects"]) == 11
    rejected = {r["source"]: r["reason"] for r in split["rejects"]}
    assert set(rejected) == {"train/class0/truncated.png", "train/class0/empty.jpg", "train/class1/notes.jpg"}
    assert all(rejected.values())
    keys = {s["meta"]["source"] for s in stored_samples(tmp_path / "s")}
    assert {"train/class1/cmyk.jpg", "train/class1/one_pixel.png"} <= keys


def test_too_many_rejects_fail_without_a_manifest(bad_folder, tmp_path):
    with pytest.raises(InputError, match="more than --max-rejects 2"):
        build(config(bad_folder, tmp_path / "s", max_rejects=2), progress=False)
    assert not (tmp_path / "s" / MANIFEST).exists()


def test_val_split_with_variants_is_refused(tiny_folder, tmp_path):
    with pytest.raises(ConfigError, match="--variants 2 with val augmentation"):
        build(config(tiny_folder, tmp_path / "s", augment="val"), progress=False)


def test_checkpoint_file_weights_are_recorded(tiny_folder, tmp_path, checkpoint_factory):
    ckpt = checkpoint_factory("cheng2020-anchor", 1, seed=3)
    manifest = build(config(tiny_folder, tmp_path / "s", weights=str(ckpt), variants=1), progress=False)
    w = manifest["coder"]["weights"]
    assert w["source"] == "file" and w["trained"] is True and len(w["file_sha256"]) == 64
    assert_exact(tmp_path / "s", tiny_folder, load_coder("cheng2020", 1, str(ckpt)), count=2)
