"""Seeded, replayable augmentation."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from latentstore.build.augment import VERSION, apply, sample_params, variant_rng
from latentstore.errors import ConfigError, InputError


def _photo(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _params(seed, key, variant, size=(500, 375), mode="train"):
    return sample_params(variant_rng(seed, key, variant), size, mode)


def test_deterministic_in_seed_key_variant_and_order_free():
    a = [_params(0, f"k{i}", v) for i in range(5) for v in range(3)]
    b = [_params(0, f"k{i}", v) for v in reversed(range(3)) for i in reversed(range(5))]
    assert sorted(map(json.dumps, a)) == sorted(map(json.dumps, b))
    assert _params(7, "img", 2) == _params(7, "img", 2)


def test_variants_keys_and_seeds_differ():
    base = _params(0, "img", 0)
    assert len({json.dumps(_params(0, "img", v)) for v in range(16)}) == 16
    assert _params(0, "img2", 0) != base and _params(1, "img", 0) != base


@pytest.mark.parametrize("mode", ["train", "val"])
def test_replay_is_bit_exact_and_json_round_trips(mode):
    img = _photo(320, 240)
    params = sample_params(variant_rng(3, "x", 1), img.size, mode)
    replayed = json.loads(json.dumps(params))
    assert replayed == params
    out = apply(img, params)
    assert out.size == (224, 224) and out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(apply(img.copy(), replayed)))
    assert params["version"] == VERSION and params["source_size"] == [320, 240]
    assert params["interpolation"] == "bilinear" and params["size"] == [224, 224]


def test_flip_mirrors_the_same_crop():
    img = _photo(300, 300)
    params = _params(0, "f", 0, size=img.size)
    flipped = dict(params, flip=not params["flip"])
    assert np.array_equal(np.asarray(apply(img, params))[:, ::-1], np.asarray(apply(img, flipped)))


def test_val_is_a_center_crop():
    img = _photo(256, 256)
    params = _params(0, "v", 0, size=img.size, mode="val")
    assert params["box"] == [16, 16, 224, 224] and params["flip"] is False and params["resize"] == 256
    assert np.array_equal(np.asarray(apply(img, params)), np.asarray(img.crop((16, 16, 240, 240))))


def test_val_matches_torchvision_resize_center_crop():
    tv = pytest.importorskip("torchvision.transforms")
    img = _photo(333, 500)
    ours = np.asarray(apply(img, _params(0, "v", 0, size=img.size, mode="val"))).astype(int)
    ref = np.asarray(tv.Compose([tv.Resize(256), tv.CenterCrop(224)])(img)).astype(int)
    assert np.abs(ours - ref).max() <= 1  # same filter; only float box arithmetic differs


def test_val_ignores_the_rng_and_variant():
    assert _params(0, "a", 0, mode="val") == _params(9, "b", 5, mode="val")


@pytest.mark.parametrize("size", [(1, 1), (10, 300), (300, 10), (223, 224), (2, 3)])
@pytest.mark.parametrize("mode", ["train", "val"])
def test_tiny_and_thin_images(size, mode):
    img = _photo(*size)
    for v in range(5):
        params = _params(0, "t", v, size=size, mode=mode)
        out = apply(img, params)
        assert out.size == (224, 224)
        left, top, w, h = params["box"]
        assert left >= 0 and top >= 0 and left + w <= size[0] + 1e-9 and top + h <= size[1] + 1e-9


def test_train_fallback_is_torchvision_center_crop():
    # 10x300 is too thin for any draw within the ratio range, so all 10 tries
    # fail and torchvision's fallback keeps the full width at ratio 3/4.
    assert _params(0, "thin", 0, size=(10, 300))["box"] == [0, 143, 10, 13]
    assert _params(0, "one", 0, size=(1, 1))["box"] == [0, 0, 1, 1]


def test_train_parameter_ranges_over_many_draws():
    width, height = 500, 375
    boxes, flips = [], []
    for v in range(2000):
        p = _params(0, "many", v, size=(width, height))
        boxes.append(p["box"])
        flips.append(p["flip"])
        assert all(isinstance(x, int) for x in p["box"])
    b = np.array(boxes, dtype=float)
    left, top, w, h = b.T
    assert (left >= 0).all() and (top >= 0).all()
    assert (left + w <= width).all() and (top + h <= height).all()
    scale, ratio = w * h / (width * height), w / h
    # Rounding w and h to pixels widens the nominal ranges by a hair.
    assert scale.min() >= 0.08 * 0.98 and scale.max() <= 1.0
    assert ratio.min() >= 0.75 * 0.99 and ratio.max() <= 4 / 3 * 1.01
    assert scale.min() < 0.1 and scale.max() > 0.9  # the whole range is used
    assert 0.45 < np.mean(flips) < 0.55
    # log-uniform aspect ratio: about half the crops are wider than tall.
    assert 0.4 < np.mean(np.log(ratio) > 0) < 0.6
    assert math.isclose(np.median(np.log(ratio)), 0, abs_tol=0.05)


def test_label_maps_can_share_params_with_nearest():
    labels = Image.fromarray(np.random.default_rng(0).integers(0, 19, (240, 320), dtype=np.uint8), "L")
    params = _params(0, "seg", 0, size=labels.size)
    out = np.asarray(apply(labels, params, resample="nearest"))
    assert set(np.unique(out)) <= set(range(19))  # nearest never invents classes


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="train"):
        sample_params(variant_rng(0, "k", 0), (10, 10), "test")
    params = _params(0, "k", 0, size=(100, 100))
    with pytest.raises(InputError, match="wrong source image"):
        apply(_photo(50, 50), params)
    with pytest.raises(ConfigError, match="version"):
        apply(_photo(100, 100), dict(params, version=VERSION + 1))
