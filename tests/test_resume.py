"""A resumed build checks the dataset: nothing stored twice, nothing dropped, against the current tree."""
import json
import os
import shutil

import pytest
from PIL import Image

from latentstore.build.run import BuildConfig, build
from latentstore.build.sources import open_source
from latentstore.errors import InputError, StoreError
from latentstore.store.format import MANIFEST
from latentstore.store.seal import seal
from latentstore.store.readers import read_shard
from latentstore.commands.verify import verify

ARGS = dict(coder="bmshj2018-hyperprior", quality=1, weights="untrained", dataset="imagefolder",
            split="train", variants=1, crop=64, shard_size=2)


def config(root, out, **kw):
    return BuildConfig(root=str(root), out=str(out), **{**ARGS, **kw})


@pytest.fixture
def folder(tiny_folder, tmp_path):
    """A private copy of the tiny dataset (6 images, 2 classes) that a test may change."""
    return shutil.copytree(tiny_folder, tmp_path / "data")


def stored_items(out, split="train"):
    """Item keys of every stored sample, read back through the strict reader (duplicates kept)."""
    manifest = json.loads((out / MANIFEST).read_text())
    return [s.meta.item for shard in manifest["splits"][split]["shards"]
            for s in read_shard(out, manifest["backend"], shard)]


def current_keys(root):
    return [it.key for it in open_source("imagefolder", root, "train").items]


def assert_matches_tree(out, root):
    """images_found = stored + rejected against the current tree; every image stored exactly once."""
    entry = json.loads((out / MANIFEST).read_text())["splits"]["train"]
    keys = current_keys(root)
    items = stored_items(out)
    assert sorted(items) == sorted(set(items)), "an image is stored twice"
    assert sorted(items + [r["key"] for r in entry["rejects"]]) == sorted(keys)
    assert entry["images_found"] == len(keys) == entry["images_stored"] + len(entry["rejects"])
    report = verify(out)
    assert report.ok, report.problems


def corrupt(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)


def test_following_the_reject_message_stores_the_fixed_image_and_forgets_the_removed_one(folder, tmp_path):
    out = tmp_path / "s"
    good = folder / "train" / "class0" / "img0.png"
    fixed, removed = folder / "train" / "class0" / "img1.png", folder / "train" / "class1" / "img2.png"
    original = fixed.read_bytes()
    corrupt(fixed)
    corrupt(removed)
    with pytest.raises(InputError, match="Fix or remove those files"):
        build(config(folder, out, max_rejects=1), progress=False)
    fixed.write_bytes(original)
    removed.unlink()
    build(config(folder, out, max_rejects=1), progress=False)
    entry = json.loads((out / MANIFEST).read_text())["splits"]["train"]
    assert entry["rejects"] == []
    assert entry["images_found"] == entry["images_stored"] == 5
    assert "train_class0_img1" in stored_items(out) and good.exists()
    assert_matches_tree(out, folder)


def test_raising_max_rejects_on_the_rerun_is_accepted(folder, tmp_path):
    out = tmp_path / "s"
    corrupt(folder / "train" / "class0" / "img1.png")
    corrupt(folder / "train" / "class1" / "img2.png")
    with pytest.raises(InputError, match="raise --max-rejects"):
        build(config(folder, out, max_rejects=1), progress=False)
    manifest = build(config(folder, out, max_rejects=5), progress=False)
    assert sorted(r["key"] for r in manifest["splits"]["train"]["rejects"]) == \
        ["train_class0_img1", "train_class1_img2"]
    assert_matches_tree(out, folder)


def test_a_rejected_image_that_now_decodes_is_stored_on_the_rerun(folder, tmp_path):
    out = tmp_path / "s"
    bad = folder / "train" / "class1" / "img0.png"
    original = bad.read_bytes()
    corrupt(bad)
    assert len(build(config(folder, out), progress=False)["splits"]["train"]["rejects"]) == 1
    bad.write_bytes(original)
    manifest = build(config(folder, out), progress=False)
    assert manifest["splits"]["train"]["rejects"] == []
    assert "train_class1_img0" in stored_items(out)
    assert_matches_tree(out, folder)


@pytest.mark.parametrize("fmt", ["webdataset", "zarr"])
def test_a_file_renamed_between_parts_is_not_lost(folder, tmp_path, fmt):
    out = tmp_path / "s"
    build(config(folder, out, part=(0, 2), format=fmt), progress=False)
    src = folder / "train" / "class0" / "img0.png"
    src.rename(src.with_name("zz.png"))  # group 0 (part 0) loses it, the last group (part 1) gains it
    build(config(folder, out, part=(1, 2), format=fmt), progress=False)
    with pytest.raises(StoreError, match=r"part 1/2 listed other images .* the dataset changed between them"):
        seal(out)
    build(config(folder, out, part=(0, 2), format=fmt), progress=False)  # as the message says
    seal(out)
    assert "train_class0_zz" in stored_items(out)
    assert_matches_tree(out, folder)


def test_a_file_added_after_an_interrupted_build_is_stored_once(folder, tmp_path):
    out = tmp_path / "s"
    build(config(folder, out), progress=False)
    (out / MANIFEST).unlink()  # as if killed before the last group: the rest stays committed
    (out / "train" / "group-000002.json").unlink()
    Image.open(folder / "train" / "class0" / "img0.png").save(folder / "train" / "class0" / "img00.png")
    build(config(folder, out), progress=False)
    assert sorted(stored_items(out)) == sorted(current_keys(folder))
    assert_matches_tree(out, folder)


def test_a_removed_file_leaves_no_stale_group_behind(folder, tmp_path):
    out = tmp_path / "s"
    build(config(folder, out), progress=False)
    (folder / "train" / "class1" / "img2.png").unlink()
    (folder / "train" / "class1" / "img1.png").unlink()  # 4 images: 2 groups instead of 3
    build(config(folder, out), progress=False)
    assert not (out / "train" / "group-000002.json").exists()
    assert not list((out / "train").glob("*-000002.tar"))
    assert_matches_tree(out, folder)


def test_zarr_refuses_a_dataset_that_changed_size_with_advice(folder, tmp_path):
    out = tmp_path / "s"
    build(config(folder, out, format="zarr"), progress=False)
    (folder / "train" / "class1" / "img2.png").unlink()
    with pytest.raises(InputError, match="was started from 6 images; the dataset now lists 5.*new --out"):
        build(config(folder, out, format="zarr"), progress=False)


def test_verify_reports_a_store_that_no_longer_matches_its_source(folder, tmp_path):
    out = tmp_path / "s"
    build(config(folder, out), progress=False)
    moved = shutil.copytree(folder, tmp_path / "moved")
    os.utime(moved / "train" / "class0" / "img0.png", ns=(1, 1))  # a copy's new mtime: the sha256 decides
    assert verify(out, root=moved).ok
    changed = folder / "train" / "class1" / "img1.png"
    Image.open(changed).rotate(90).save(changed)
    report = verify(out)
    assert [p for p in report.problems if "train/class1/img1.png changed since it was encoded" in p], report.problems
    assert verify(out, sources=False).ok


def test_a_second_build_into_the_same_store_is_refused_with_a_lock_message(folder, tmp_path):
    import fcntl

    from latentstore.errors import ConfigError

    out = tmp_path / "s"
    lock = out / "parts" / ".lock-train-part-0000-of-0001"
    lock.parent.mkdir(parents=True)
    with open(lock, "a") as held:  # what a running build holds
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match=r"Another build of split 'train' is running into .* Wait for it"):
            build(config(folder, out), progress=False)
    build(config(folder, out), progress=False)
    assert verify(out).ok


def test_a_plain_build_into_a_partitioned_store_is_refused_up_front(folder, tmp_path):
    from latentstore.errors import ConfigError

    out = tmp_path / "s"
    build(config(folder, out, part=(0, 2)), progress=False)
    groups = sorted(p.name for p in out.glob("train/group-*.json"))
    with pytest.raises(ConfigError, match=r"was started as 2 parts \(--part i/2\); this is a plain build"):
        build(config(folder, out), progress=False)
    assert sorted(p.name for p in out.glob("train/group-*.json")) == groups  # nothing encoded
    build(config(folder, out, part=(1, 2)), progress=False)
    seal(out)
    assert_matches_tree(out, folder)
