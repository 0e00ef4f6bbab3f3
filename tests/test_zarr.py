"""The Zarr backend: the same samples as the tar shards, damage caught, readable with plain zarr."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from latentstore import open_store
from latentstore.build.run import build
from latentstore.errors import ConfigError, StoreError
from latentstore.store.format import FIELDS, MANIFEST, read_manifest
from latentstore.store.zarr.reader import iter_unit, verify
from latentstore.store.readers import read_samples
from latentstore.commands.verify import verify as verify_store
from latentstore.store.zarr import writer as zarr_writer

from test_build import config
from test_cityscapes import make_cityscapes, seg_config


def build_both(root, out: Path, make_config, splits) -> dict:
    """The same builds in both formats: {format: store path}."""
    stores = {}
    for fmt in ("webdataset", "zarr"):
        stores[fmt] = out / fmt
        for split, kw in splits:
            build(make_config(root, stores[fmt], split=split, format=fmt, **kw), progress=False)
    return stores


@pytest.fixture(scope="module")
def seg_stores(tmp_path_factory):
    """Cityscapes train (2 variants, seg-train, padded crops) and val (full images) in one store, both formats."""
    tmp = tmp_path_factory.mktemp("segz")
    root = make_cityscapes(tmp / "cityscapes")
    return build_both(root, tmp, seg_config, [("train", {}), ("val", {"variants": 1})])


@pytest.fixture(scope="module")
def classify_stores(tiny_folder, tmp_path_factory):
    """ImageFolder with one unreadable image (a hole in the Zarr item axis) and optional fields."""
    tmp = tmp_path_factory.mktemp("clsz")
    root = Path(shutil.copytree(tiny_folder, tmp / "images"))
    (root / "train" / "class0" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return build_both(root, tmp, config, [("train", {"variants": 1, "shard_size": 2, "fields": ("means", "z_symbols")})])


def raw_samples(store: Path, split: str, fields=None) -> list:
    manifest = read_manifest(store)
    return [s.as_item() for unit in manifest["splits"][split]["shards"]
            for s in read_samples(store, manifest["backend"], unit, fields)]


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    for name in a:
        x, y = a[name], b[name]
        if name == "__shard__":
            assert x.removesuffix(".tar") == y.removesuffix(".tar")  # the unit's name is the shard's
        elif isinstance(x, (np.ndarray, torch.Tensor)):
            assert x.dtype == y.dtype and x.shape == y.shape, (a["__key__"], name, x.dtype, y.dtype)
            assert (x == y).all(), (a["__key__"], name)
        else:
            assert type(x) is type(y) and x == y, (a["__key__"], name)


@pytest.mark.parametrize("stores", ["seg_stores", "classify_stores"])
def test_zarr_gives_exactly_the_samples_of_the_shards(stores, request):
    stores = request.getfixturevalue(stores)
    tar, zr = read_manifest(stores["webdataset"]), read_manifest(stores["zarr"])
    assert zr["backend"] == "zarr" and tar["backend"] == "webdataset"
    assert zr["splits"].keys() == tar["splits"].keys()
    for split in tar["splits"]:
        a, b = tar["splits"][split], zr["splits"][split]
        for key in ("samples", "images_found", "images_stored", "rejects", "latent_shape", "mean_bpp", "classes"):
            assert a[key] == b[key], key
        ta, tb = raw_samples(stores["webdataset"], split), raw_samples(stores["zarr"], split)
        assert len(ta) == len(tb) == a["samples"] > 0
        for x, y in zip(ta, tb):
            assert_same(x, y)
        # a DataLoader worker's partial read: the same samples where wanted, None elsewhere
        for fmt in stores:
            manifest = read_manifest(stores[fmt])
            unit = max(manifest["splits"][split]["shards"], key=lambda u: u["samples"])
            whole = list(read_samples(stores[fmt], fmt, unit))
            part = list(read_samples(stores[fmt], fmt, unit, wanted={len(whole) - 1}))
            assert part[:-1] == [None] * (len(whole) - 1)
            assert_same(part[-1].as_item(), whole[-1].as_item())
        # and through the public reader, every field, as tensors
        names = tuple(n for n in FIELDS if n in ta[0])
        for v in range(a["variants"]):
            da = list(open_store(stores["webdataset"], split, variant=v, fields=names))
            db = list(open_store(stores["zarr"], split, variant=v, fields=names))
            assert len(da) == len(db) > 0
            for x, y in zip(da, db):
                assert_same(x, y)


def test_zarr_store_holds_the_reject_as_a_hole(classify_stores):
    manifest = read_manifest(classify_stores["zarr"])
    train = manifest["splits"]["train"]
    assert [r["key"] for r in train["rejects"]] == ["train_class0_img1"]
    present = zarr.open_group(str(classify_stores["zarr"]), mode="r")["train"]["present"][:]
    assert present.shape == (1, 6) and present.sum() == 5 and not present[0, 1]


def test_random_access_by_key(seg_stores):
    ds = open_store(seg_stores["zarr"], "train", variant=1, fields=("y_hat", "label_map", "meta"))
    for sample in ds:
        got = ds[sample["__key__"]]
        assert_same({k: v for k, v in got.items() if k != "__shard__"},
                    {k: v for k, v in sample.items() if k != "__shard__"})
    with pytest.raises(ConfigError, match="No sample"):
        ds["nonexistent_v000"]
    tar = open_store(seg_stores["webdataset"], "train", variant=1, fields=("y_hat", "label_map", "meta"))
    assert_same(tar[sample["__key__"]], sample)                 # tar shards: same sample, read from its shard


def test_plain_zarr_reads_the_store(seg_stores):
    """What docs/FORMAT.md tells a user with only `zarr` and numpy installed."""
    store = seg_stores["zarr"]
    manifest = json.loads((store / MANIFEST).read_text())
    g = zarr.open_group(str(store), mode="r")
    for split in ("train", "val"):
        expected = {s["__key__"]: s for s in raw_samples(store, split)}
        grp = g[split]
        shard_size = manifest["splits"][split]["config"]["shard_size"]
        variants, items = grp["present"].shape
        for v in range(variants):
            for i in range(items):
                start, stop = grp["meta/offsets"][v, i]
                meta = json.loads(grp["meta/bytes"][v, i // shard_size, start:stop].tobytes())
                s = expected[meta["key"]]
                np.testing.assert_array_equal(grp["y_hat"][v, i], s["y_hat"])
                np.testing.assert_array_equal(grp["label_map"][v, i], s["label_map"])
                np.testing.assert_array_equal(grp["symbols"][v, i], s["symbols"])
                start, stop = grp["y_string/offsets"][v, i]
                assert grp["y_string/bytes"][v, i // shard_size, start:stop].tobytes() == s["y_string"]
    assert g["val"]["label_map"].shape[2:] == (64, 128) and g["train"]["label_map"].shape[2:] == (64, 64)


def _damaged_copy(stores, tmp_path) -> Path:
    return Path(shutil.copytree(stores["zarr"], tmp_path / "damaged"))


def test_deleted_chunk_is_caught_never_read_as_zeros(seg_stores, tmp_path):
    store = _damaged_copy(seg_stores, tmp_path)
    assert verify(store) == [] and verify_store(store).ok
    unit = read_manifest(store)["splits"]["train"]["shards"][1]
    chunk = next(f["path"] for f in unit["files"] if "/y_hat/" in f["path"])
    (store / chunk).unlink()
    problems = verify(store)
    assert len(problems) == 1 and chunk in problems[0] and "missing" in problems[0]
    assert not verify_store(store).ok
    with pytest.raises(StoreError, match=f"shard {unit['path']}: chunk file {chunk} is missing"):
        list(iter_unit(store, unit, ("y_hat",)))
    lenient = list(iter_unit(store, unit, ("y_hat",), lenient=True))
    assert len(lenient) == 1 and lenient[0].key is None and chunk in lenient[0].message
    with pytest.raises(StoreError, match="missing"):
        list(open_store(store, "train", variant=unit["variant"], fields=("y_hat",)))


def test_altered_chunk_leftover_temp_and_unclaimed_chunk_are_reported(seg_stores, tmp_path):
    store = _damaged_copy(seg_stores, tmp_path)
    unit = read_manifest(store)["splits"]["train"]["shards"][0]
    chunk = store / next(f["path"] for f in unit["files"] if "/symbols/" in f["path"])
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (store / "train/.tmp-group-000001-4242/train/y_hat/c/0/1").mkdir(parents=True)
    (store / "train/.tmp-group-000001-4242/train/y_hat/c/0/1/0").write_bytes(b"half a chunk")
    (store / "train/y_hat/c/0/0/0/0/0.a1b2c3.partial").write_bytes(b"zarr's own temp file")
    (store / "train/y_hat/c/1/7/0/0").mkdir(parents=True)
    (store / "train/y_hat/c/1/7/0/0/0").write_bytes(b"a chunk nobody committed")
    problems = "\n".join(verify(store))
    assert f"{chunk.relative_to(store).as_posix()} differs" in problems
    assert "train/.tmp-group-000001-4242/train/y_hat/c/0/1/0: leftover temporary file" in problems
    assert "0.a1b2c3.partial: leftover temporary file" in problems
    assert "train/y_hat/c/1/7/0/0/0: chunk that no commit record claims" in problems


@pytest.mark.slow
def test_crash_mid_commit_leaves_no_data_and_resume_is_identical(tmp_path, monkeypatch):
    root = make_cityscapes(tmp_path / "cs")
    clean = tmp_path / "clean"
    build(seg_config(root, clean, format="zarr"), progress=False)

    crashed = tmp_path / "crashed"
    real_move = zarr_writer.ZarrGroupWriter._move_chunks

    def move_then_die(self, units, staging, wanted):  # the second group dies halfway through its renames
        if self.group == 1:
            src = sorted(p for p in (staging / self.split).rglob("*") if p.is_file() and p.name != "zarr.json")
            first = src[0]
            dst = self.store / self.split / first.relative_to(staging / self.split)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(first, dst)
            raise KeyboardInterrupt("simulated kill")
        return real_move(self, units, staging, wanted)

    monkeypatch.setattr(zarr_writer.ZarrGroupWriter, "_move_chunks", move_then_die)
    with pytest.raises(KeyboardInterrupt):
        build(seg_config(root, crashed, format="zarr"), progress=False)
    assert not (crashed / MANIFEST).exists() and not (crashed / "train/group-000001.json").exists()
    assert not list((crashed / "train").glob(".tmp-group-*")), "staging is removed on failure"
    monkeypatch.setattr(zarr_writer.ZarrGroupWriter, "_move_chunks", real_move)
    build(seg_config(root, crashed, format="zarr", batch_size=3), progress=False)
    assert verify(crashed) == []
    ma, mb = read_manifest(clean), read_manifest(crashed)
    assert ma["splits"]["train"]["shards"] == mb["splits"]["train"]["shards"]  # every chunk's sha256


@pytest.mark.parametrize("shard_bytes, files", [(zarr_writer.SHARD_BYTES, 1), (1, 3)])
def test_one_shard_file_per_field_and_unit_however_small_the_chunks(tiny_folder, tmp_path, monkeypatch,
                                                                    shard_bytes, files):
    """Samples are flushed in chunks of c items (c = 1 here: a tiny buffer), but each (field,
    variant, group) unit lands in ONE file: an 80-variant Cityscapes store stays at tens of
    thousands of files, not a million. Only a unit bigger than SHARD_BYTES (forced here: 1)
    is split into several shards. The samples are those of the tar build either way."""
    monkeypatch.setattr(zarr_writer, "BUFFER_BYTES", 1)
    monkeypatch.setattr(zarr_writer, "SHARD_BYTES", shard_bytes)
    stores = build_both(tiny_folder, tmp_path, config, [("train", {"shard_size": 3})])
    manifest = read_manifest(stores["zarr"])
    y_hat = zarr.open_group(str(stores["zarr"]), mode="r")["train/y_hat"]
    assert y_hat.chunks[1] == 1 and y_hat.shards[1] == 3 // files
    for unit in manifest["splits"]["train"]["shards"]:
        per_array = {}
        for f in unit["files"]:
            array = f["path"].split("/c/")[0]
            per_array[array] = per_array.get(array, 0) + 1
        assert per_array["train/y_hat"] == per_array["train/symbols"] == files
    for x, y in zip(raw_samples(stores["webdataset"], "train"), raw_samples(stores["zarr"], "train")):
        assert_same(x, y)
    assert verify(stores["zarr"]) == []
