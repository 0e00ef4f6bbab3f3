"""Cityscapes source, joint image/label augmentation, and segmentation stores judged against CompressAI."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentstore.build.augment import SEG_SCALE, apply, sample_params, variant_rng
from latentstore.build.run import BuildConfig, build
from latentstore.coders.registry import load_coder
from latentstore.build.sources import (CITYSCAPES_CLASSES, CITYSCAPES_LABELS, IGNORE_INDEX, LABEL_ID_TO_TRAIN_ID,
                                  load_label_map, open_source)
from latentstore.errors import ConfigError, InputError
from latentstore.store.format import MANIFEST
from latentstore.build.images import load_rgb

from conftest import demo_photos
from test_build import assert_exact, shard_bytes, stored_samples

SIZE = (128, 64)  # (w, h): Cityscapes' 2:1 aspect at 1/16 scale
#: (split, city, index, label file kind)
FRAMES = [("train", "aachen", 0, "labelIds"), ("train", "aachen", 1, "labelIds"),
          ("train", "bochum", 2, "labelTrainIds"), ("val", "frankfurt", 3, "labelIds")]


def synthetic_label_ids(seed: int) -> np.ndarray:
    """8x8-pixel blocks cycling through every labelId (0-33) and 255 (license plate), shuffled."""
    values = np.array([i for i, _, _ in CITYSCAPES_LABELS], dtype=np.uint8)
    blocks = np.resize(np.random.default_rng(seed).permutation(values), (SIZE[1] // 8) * (SIZE[0] // 8))
    return blocks.reshape(SIZE[1] // 8, SIZE[0] // 8).repeat(8, 0).repeat(8, 1)


def make_cityscapes(root: Path) -> Path:
    """A tiny tree in the standard layout: real photos resized to 128x64, synthetic label maps."""
    photos = demo_photos()
    for split, city, n, kind in FRAMES:
        name = f"{city}_{n:06d}_000019"
        (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
        Image.open(photos[n % len(photos)]).convert("RGB").resize(SIZE, Image.BILINEAR).save(
            root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png")
        ids = synthetic_label_ids(n)
        Image.fromarray(ids, "L").save(root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png")
        if kind == "labelTrainIds":  # as cityscapesscripts' createTrainIdLabelImgs writes them
            Image.fromarray(LABEL_ID_TO_TRAIN_ID[ids].astype(np.uint8), "L").save(
                root / "gtFine" / split / city / f"{name}_gtFine_labelTrainIds.png")
    return root


@pytest.fixture(scope="session")
def cityscapes(tmp_path_factory) -> Path:
    return make_cityscapes(tmp_path_factory.mktemp("cityscapes"))


def seg_config(root, out, **kw) -> BuildConfig:
    base = dict(coder="cheng2020", quality=1, weights="untrained", dataset="cityscapes", root=str(root),
                split="train", out=str(out), variants=2, crop=64, scale=(0.5, 1.5), shard_size=2,
                y_hat_dtype="float32")
    return BuildConfig(**{**base, **kw})


# --------------------------------------------------------------------------- labels

def test_label_table_maps_34_label_ids_to_19_train_ids():
    lut = LABEL_ID_TO_TRAIN_ID
    assert len(CITYSCAPES_CLASSES) == 19
    assert (lut[7], lut[8], lut[11], lut[24], lut[26], lut[33]) == (0, 1, 2, 11, 13, 18)
    assert [CITYSCAPES_CLASSES[i] for i in (0, 10, 13, 18)] == ["road", "sky", "car", "bicycle"]
    assert all(lut[i] == 255 for i in (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, 255))
    train_ids = lut[:34][lut[:34] != 255]
    assert sorted(train_ids.tolist()) == list(range(19))  # each train id from exactly one labelId
    assert (lut[34:255] == -1).all(), "values that are no labelId must be errors, not guesses"


def test_source_lists_images_with_their_label_maps(cityscapes):
    src = open_source("cityscapes", cityscapes, "train")
    assert src.classes == CITYSCAPES_CLASSES
    assert [it.relpath for it in src.items] == [
        "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
        "leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png",
        "leftImg8bit/train/bochum/bochum_000002_000019_leftImg8bit.png"]
    assert [it.label_path.name for it in src.items] == [
        "aachen_000000_000019_gtFine_labelIds.png", "aachen_000001_000019_gtFine_labelIds.png",
        "bochum_000002_000019_gtFine_labelTrainIds.png"]  # labelTrainIds preferred where present
    assert all(it.label == -1 and "." not in it.key for it in src.items)
    assert len(open_source("cityscapes", cityscapes, "val").items) == 1


def test_label_maps_load_as_train_ids(cityscapes):
    for item in open_source("cityscapes", cityscapes, "train").items:
        ids = synthetic_label_ids(int(item.key.split("_")[-3]))
        got = np.asarray(load_label_map(item, SIZE))
        np.testing.assert_array_equal(got, LABEL_ID_TO_TRAIN_ID[ids].astype(np.uint8))
        assert set(np.unique(got)) == set(range(19)) | {IGNORE_INDEX}  # all 19 classes plus ignore


def _copy(cityscapes, tmp_path) -> Path:
    return Path(shutil.copytree(cityscapes, tmp_path / "cs"))


def test_missing_label_map_is_an_error_naming_it(cityscapes, tmp_path):
    root = _copy(cityscapes, tmp_path)
    (root / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(InputError, match="aachen_000001_000019_gtFine_label"):
        open_source("cityscapes", root, "train")


def test_label_without_image_is_an_error(cityscapes, tmp_path):
    root = _copy(cityscapes, tmp_path)
    (root / "leftImg8bit/train/bochum/bochum_000002_000019_leftImg8bit.png").unlink()
    with pytest.raises(InputError, match="bochum_000002_000019_gtFine"):
        open_source("cityscapes", root, "train")


def test_mismatched_or_invalid_label_map_is_an_error_naming_it(cityscapes, tmp_path):
    root = _copy(cityscapes, tmp_path)
    item = open_source("cityscapes", root, "train").items[0]
    Image.fromarray(synthetic_label_ids(0)[:32], "L").save(item.label_path)
    with pytest.raises(InputError, match=f"{item.label_path.name}.*mismatched"):
        load_label_map(item, SIZE)
    bad = synthetic_label_ids(0)
    bad[0, 0] = 40
    Image.fromarray(bad, "L").save(item.label_path)
    with pytest.raises(InputError, match=f"{item.label_path.name}.*\\[40\\]"):
        load_label_map(item, SIZE)
    # the build stops on it too: nothing is skipped silently
    with pytest.raises(InputError, match=item.label_path.name):
        build(seg_config(root, tmp_path / "s"), progress=False)
    assert not (tmp_path / "s" / MANIFEST).exists()


# --------------------------------------------------------------------------- joint augmentation

def coded_pair(seed=0):
    """An RGB image whose red channel is 10x the label, so alignment can be read off the pixels."""
    label = np.random.default_rng(seed).integers(0, 19, (SIZE[1] // 4, SIZE[0] // 4)).astype(np.uint8)
    label = label.repeat(4, 0).repeat(4, 1)
    return Image.fromarray(np.stack([label * 10] * 3, -1)), Image.fromarray(label, "L")


def test_joint_crops_align_flip_together_and_pad_with_ignore():
    img, label = coded_pair()
    padded = flipped = 0
    for v in range(40):
        params = sample_params(variant_rng(0, "k", v), SIZE, "seg-train", crop=48, scale=(0.3, 1.5))
        out_img = np.asarray(apply(img, params, resample="nearest"))
        out_lab = np.asarray(apply(label, params, resample="nearest", fill=IGNORE_INDEX))
        assert out_img.shape == (48, 48, 3) and out_lab.shape == (48, 48)
        cw, ch = params["content_size"]
        assert params["pad"] == [0, 0, 48 - cw, 48 - ch]
        np.testing.assert_array_equal(out_img[:ch, :cw, 0], out_lab[:ch, :cw] * 10)   # same geometry
        assert (out_lab[ch:] == 255).all() and (out_lab[:, cw:] == 255).all()          # label pad: ignore
        assert (out_img[ch:] == 0).all() and (out_img[:, cw:] == 0).all()              # image pad: 0
        assert set(np.unique(out_lab[:ch, :cw])) <= set(range(19))  # nearest: no blended labels
        unflipped = np.asarray(apply(label, {**params, "flip": not params["flip"]}, "nearest", IGNORE_INDEX))
        np.testing.assert_array_equal(unflipped[:ch, :cw], out_lab[:ch, :cw][:, ::-1])
        padded += cw < 48 or ch < 48
        flipped += params["flip"]
    assert 0 < padded < 40 and 0 < flipped < 40


def test_seg_train_equals_rescale_then_crop():
    """The box recipe gives the pixels of 'resize the whole image to the drawn scale, then crop'."""
    img, label = coded_pair(1)
    for v in range(10):
        p = sample_params(variant_rng(1, "k", v), SIZE, "seg-train", crop=96)
        assert SEG_SCALE[0] <= p["scale"] <= SEG_SCALE[1]
        sw, sh = p["scaled_size"]
        left, top = round(p["box"][0] * sw / SIZE[0]), round(p["box"][1] * sh / SIZE[1])
        cw, ch = p["content_size"]
        for src, resample in ((label, Image.NEAREST), (img, Image.BILINEAR)):
            ref = np.asarray(src.resize((sw, sh), resample).crop((left, top, left + cw, top + ch)))
            ref = ref[:, ::-1] if p["flip"] else ref
            got = np.asarray(apply(src, p, "nearest" if src is label else None))[:ch, :cw]
            if src is img:  # within 1 level: the fractional box rounds differently
                np.testing.assert_allclose(got, ref, atol=1, rtol=0)
            else:  # PIL's nearest breaks ties on exact pixel edges differently with a box
                assert (got == ref).mean() > 0.95


def test_seg_val_is_the_full_image_once():
    img, label = coded_pair()
    p = sample_params(variant_rng(0, "k", 0), SIZE, "seg-val")
    np.testing.assert_array_equal(np.asarray(apply(label, p, "nearest", IGNORE_INDEX)), np.asarray(label))
    np.testing.assert_array_equal(np.asarray(apply(img, p)), np.asarray(img))
    assert p["flip"] is False and p["size"] == list(SIZE)


def test_defaults_are_the_papers(cityscapes, tmp_path):
    train = BuildConfig(coder="cheng2020", quality=3, dataset="cityscapes", root=str(cityscapes),
                        split="train", out=str(tmp_path), variants=80).resolved()
    assert (train.augment, train.crop, train.scale) == ("seg-train", 640, (0.5, 2.0))
    val = BuildConfig(coder="cheng2020", quality=3, dataset="cityscapes", root=str(cityscapes),
                      split="val", out=str(tmp_path)).resolved()
    assert (val.augment, val.scale, val.variants) == ("seg-val", None, 1)
    with pytest.raises(ConfigError, match="seg-val"):
        BuildConfig(coder="cheng2020", quality=3, dataset="cityscapes", root=str(cityscapes),
                    split="val", out=str(tmp_path), variants=2).resolved()
    imagenet = BuildConfig(coder="cheng2020", quality=3, dataset="imagenet", root=str(cityscapes),
                           split="train", out=str(tmp_path)).resolved()
    assert (imagenet.augment, imagenet.crop, imagenet.scale) == ("train", 224, None)


# --------------------------------------------------------------------------- stores

def assert_labels_replay(store: Path, root: Path, split="train") -> int:
    """Replaying each sample's stored params on its source label map reproduces the stored label_map."""
    source = {it.relpath: it for it in open_source("cityscapes", root, split).items}
    n = 0
    for s in stored_samples(store, split):
        meta = s["meta"]
        item = source[meta["source"]]
        label = load_label_map(item, load_rgb(item.path).size)
        expected = np.asarray(apply(label, meta["augment"], resample="nearest", fill=IGNORE_INDEX))
        assert s["label_map"].dtype == np.uint8
        np.testing.assert_array_equal(s["label_map"], expected, err_msg=s["__key__"])
        assert list(s["label_map"].shape) == meta["image_size"]  # full crop resolution
        n += 1
    return n


def test_segmentation_store_is_exact_and_aligned(cityscapes, tmp_path):
    out = tmp_path / "s"
    build(seg_config(cityscapes, out), progress=False)
    build(seg_config(cityscapes, out, split="val", variants=1), progress=False)
    manifest = json.loads((out / MANIFEST).read_text())
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    assert (train["samples"], val["samples"]) == (6, 1)
    assert train["latent_shape"][1:] == [4, 4] and val["latent_shape"][1:] == [4, 8]  # 64 crop; 64x128
    assert train["classes"] == CITYSCAPES_CLASSES and "label_map.png" in train["bytes_per_sample"]
    assert assert_labels_replay(out, cityscapes) == 6
    assert assert_labels_replay(out, cityscapes, "val") == 1
    pads = [s["meta"]["augment"]["pad"] != [0, 0, 0, 0] for s in stored_samples(out)]
    assert any(pads) and not all(pads)
    assert_exact(out, cityscapes, load_coder("cheng2020", 1, "untrained"))


@pytest.mark.slow
def test_segmentation_rebuild_is_byte_identical(cityscapes, tmp_path):
    build(seg_config(cityscapes, tmp_path / "a", batch_size=1), progress=False)
    build(seg_config(cityscapes, tmp_path / "b", batch_size=5, workers=2), progress=False)
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
