"""Everything downstream of the build on a generic-path store (issue 26, item 4): an elic2022-official store
(M = 320 channels, seeded untrained weights) converted to Zarr and back, built straight into Zarr, given a
teacher by add-teacher, trained on and evaluated by eval/classify.py, and decoded by `verify --decode`.

The strings container is read here with test_generic's reader (struct and json, docs/FORMAT.md "Nested
strings"), not with latentstore's, and what it holds is decoded by CompressAI alone.
"""
import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_config
from latentstore.build.run import build
from latentstore.commands.add_teacher import add_teacher, teacher_error
from latentstore.commands.convert import convert
from latentstore.commands.verify import verify
from latentstore.store.format import MANIFEST, read_manifest
from latentstore.store.readers import read_samples
from test_eval import _load_script
from test_exact import cli, g_s_input
from test_generic import read_container
from test_train import args as train_args, classify, losses

pytestmark = pytest.mark.slow
CODER = "elic2022-official"
SPLITS = ("train", "val")


def samples(store: Path, split: str = "train") -> dict:
    """{key: sample dict} of a split, every field as the strict reader of its backend gives it."""
    manifest = read_manifest(store)
    return {s["__key__"]: s for unit in manifest["splits"][split]["shards"]
            for s in (x.as_item() for x in read_samples(store, manifest["backend"], unit))}


def assert_same_samples(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key, sample in a.items():
        assert sample.keys() == b[key].keys(), key
        for name, value in sample.items():
            if isinstance(value, np.ndarray):
                assert value.dtype == b[key][name].dtype and value.shape == b[key][name].shape, (key, name)
                assert value.tobytes() == b[key][name].tobytes(), (key, name)
            elif not name.startswith("__"):
                assert value == b[key][name], (key, name)


def decoded_by_compressai(model, y_string: bytes) -> np.ndarray:
    """What CompressAI's decompress() hands to g_s for the container's streams and shape."""
    streams, shape = read_container(y_string)
    return g_s_input(model, lambda: model.decompress([[s] for s in streams], shape))[1]


def build_elic(root: Path, out: Path, **overrides) -> Path:
    """Train and val splits (each image's deterministic val crop, so eval needs no random crop)."""
    base = tiny_config(root, out, coder=CODER, shard_size=2, augment="val", y_hat_dtype="float32", **overrides)
    for split in SPLITS:
        build(replace(base, split=split), progress=False)
    return out


@pytest.fixture(scope="module")
def data_root(tiny_folder, tmp_path_factory) -> Path:
    """tiny_folder's photos as a train and a val split."""
    root = tmp_path_factory.mktemp("elic-data")
    for split in SPLITS:
        shutil.copytree(tiny_folder / "train", root / split)
    return root


@pytest.fixture(scope="module")
def tar_store(data_root, tmp_path_factory) -> Path:
    return build_elic(data_root, tmp_path_factory.mktemp("elic-tar") / "s")


@pytest.fixture(scope="module")
def zarr_store(data_root, tmp_path_factory) -> Path:
    return build_elic(data_root, tmp_path_factory.mktemp("elic-zarr") / "s", format="zarr")


@pytest.fixture(scope="module")
def converted(tar_store, tmp_path_factory) -> tuple:
    """(tar -> zarr, zarr -> tar) of the tar store."""
    folder = tmp_path_factory.mktemp("elic-converted")
    convert(tar_store, folder / "zarr", "zarr", progress=False)
    convert(folder / "zarr", folder / "back", "webdataset", progress=False)
    return folder / "zarr", folder / "back"


@pytest.fixture(scope="module")
def elic_model(tar_store):
    """The store's coder as CompressAI builds it: the zoo-less class with the build's seeded weights."""
    from latentstore.coders.registry import load_coder_from_manifest

    return load_coder_from_manifest(read_manifest(tar_store)["coder"]).model


def test_the_store_is_a_generic_path_store_with_320_channels(tar_store):
    manifest = read_manifest(tar_store)
    assert manifest["coder"]["name"] == CODER and manifest["coder"]["path"] == "generic"
    for split in SPLITS:
        assert manifest["splits"][split]["latent_shape"][0] == 320
        assert manifest["splits"][split]["images_found"] == 6


def test_convert_to_zarr_and_back_keeps_every_field_and_the_strings_container(tar_store, converted, elic_model):
    as_zarr, back = converted
    assert read_manifest(as_zarr)["backend"] == "zarr" and read_manifest(as_zarr)["coder"]["path"] == "generic"
    for split in SPLITS:
        original = samples(tar_store, split)
        assert_same_samples(samples(as_zarr, split), original)
        assert_same_samples(samples(back, split), original)
        for s in samples(as_zarr, split).values():
            streams, _ = read_container(s["y_string"])
            assert len(streams) == 11  # ELIC: z, then an anchor and a non-anchor half per channel group (5)
            assert s["meta"]["bits"] == 8 * sum(map(len, streams))
            np.testing.assert_array_equal(decoded_by_compressai(elic_model, s["y_string"]), s["y_hat"])
    for shard in sorted(tar_store.glob("*/*.tar")):  # back to tar: the original bytes
        assert (back / shard.relative_to(tar_store)).read_bytes() == shard.read_bytes(), shard.name
    assert (back / MANIFEST).read_bytes() == (tar_store / MANIFEST).read_bytes()


def test_a_zarr_build_equals_the_converted_store_and_decodes(zarr_store, converted, capsys):
    as_zarr, _ = converted
    for split in SPLITS:
        assert_same_samples(samples(zarr_store, split), samples(as_zarr, split))
    for store in (zarr_store, as_zarr):
        report = verify(store, decode=12)  # every sample: CompressAI decodes the Zarr-held containers
        assert report.ok and report.decoded == report.samples == 12, report.problems


def test_verify_decode_through_the_cli_on_the_zarr_store(zarr_store, capsys):
    cli("verify", zarr_store, "--decode", "all", "--quiet")
    assert "12 samples checked, 12 decoded by CompressAI: OK" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["webdataset", "zarr"])
def test_add_teacher_on_a_generic_store_then_transfer_training(backend, tar_store, zarr_store, tmp_path):
    store = Path(shutil.copytree(tar_store if backend == "webdataset" else zarr_store, tmp_path / "s"))
    before = samples(store)
    add_teacher(store, "resnet18", "untrained", dtype="float16", progress=False)
    after = samples(store)
    assert after.keys() == before.keys()
    for key, s in after.items():  # the teacher maps added, every other field as it was
        assert {"teacher_s8", "teacher_s16", "teacher_s32"} <= s.keys(), key
        assert_same_samples({key: {k: v for k, v in s.items() if not k.startswith("teacher_")}}, {key: before[key]})
    assert read_manifest(store)["splits"]["train"]["teacher"]["name"] == "resnet18"
    assert max(teacher_error(store, samples=2, split="train")["train"]["stored_vs_live"].values()) == 0
    report = verify(store, decode=2)
    assert report.ok and report.decoded == 2, report.problems
    if backend == "webdataset":  # the maps are read by a trainer distilling from them
        run = tmp_path / "kt"
        classify.main(train_args(store, run, "--transfer", "mse", "--beta", "0.5", "--teacher", "resnet18",
                                 "--teacher-weights", "untrained", "--max-steps", "2"))
        with open(run / "metrics.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["name"] == "transfer"]
        assert len(rows) == 2 and all(float(r["value"]) > 0 for r in rows)


def test_eval_of_a_checkpoint_trained_on_the_store_counts_the_container_streams(tar_store, tmp_path):
    run = tmp_path / "run"
    classify.main(train_args(tar_store, run, "--epochs", "1"))
    assert len(losses(run)) >= 3 and all(np.isfinite([float(v) for _, v in losses(run)]))
    out = tmp_path / "eval.json"
    assert _load_script("classify").main(["--store", str(tar_store), "--checkpoint", str(run / "last.pt"),
                                          "--out", str(out), "--device", "cpu", "--batch-size", "4"]) == 0
    rec = json.loads(out.read_text())
    val = samples(tar_store, "val").values()
    bits = sum(8 * sum(map(len, read_container(s["y_string"])[0])) for s in val)
    pixels = sum(s["meta"]["image_size"][0] * s["meta"]["image_size"][1] for s in val)
    assert bits == sum(s["meta"]["bits"] for s in val)
    assert (rec["samples"], rec["bits"], rec["pixels"]) == (6, bits, pixels)
    assert rec["bpp"] == bits / pixels == read_manifest(tar_store)["splits"]["val"]["mean_bpp"]
    assert rec["matches_manifest"] is True and rec["coder"] == CODER


def test_segmentation_trains_and_evaluates_on_a_generic_cityscapes_store(tmp_path):
    """train/segment.py (pspnet50-aa for 320 channels) on seg-train crops, eval/segment.py on whole val images."""
    from test_cityscapes import make_cityscapes, seg_config
    from test_train import segment

    root, store = make_cityscapes(tmp_path / "cityscapes"), tmp_path / "cs"
    base = seg_config(root, store, coder=CODER, variants=1)
    build(base, progress=False)
    build(replace(base, split="val", crop=None, scale=None), progress=False)
    assert read_manifest(store)["splits"]["val"]["latent_shape"] == [320, 4, 8]  # the whole 128x64 image
    run = tmp_path / "seg"
    segment.main(train_args(store, run, "--model", "pspnet50-aa", "--max-steps", "2"))
    assert [s for s, _ in losses(run)] == [1, 2] and all(np.isfinite([float(v) for _, v in losses(run)]))
    assert _load_script("segment").main(["--store", str(store), "--checkpoint", str(run / "last.pt"),
                                         "--device", "cpu", "--out", str(tmp_path / "eval.json")]) == 0
    rec = json.loads((tmp_path / "eval.json").read_text())
    with open(run / "metrics.csv") as f:  # the trainer validated on the val split's own region, as eval does
        validated = [(int(r["step"]), float(r["value"])) for r in csv.DictReader(f) if r["name"] == "val_miou"]
    assert validated[-1][0] == 2 and validated[-1][1] == pytest.approx(rec["miou"])
    (val,) = samples(store, "val").values()
    assert rec["bits"] == 8 * sum(map(len, read_container(val["y_string"])[0])) == val["meta"]["bits"]
    assert rec["matches_manifest"] is True and rec["labeled_pixels"] == int((val["label_map"] != 255).sum())
    assert np.array(rec["confusion_matrix"]).sum() == rec["labeled_pixels"]
