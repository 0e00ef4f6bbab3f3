"""The named coders beyond the six single-pass families, built by the real CLI at 224 crops (padded
to 256) and at one Cityscapes train crop (640x640, pipelines/cityscapes.sh), judged by CompressAI alone,
as tests/test_exact.py judges the others.

The reference loads the class from the checkpoint file with CompressAI, replays the stored
augmentation with the test's own code, runs compress() and decompress() at one thread and reads the
strings container with struct and json (docs/FORMAT.md "Nested strings"): nothing of the build.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from compressai.models import Cheng2020AnchorCheckerboard, Elic2022Chandelier, Elic2022Official, FactorizedPriorReLU
from PIL import Image

from conftest import DEMO, demo_photos
from test_exact import cli, reference, replay, stored
from test_generic import read_container

CLASSES = {"elic2022-official": Elic2022Official, "elic2022-chandelier": Elic2022Chandelier,
           "cheng2020-checkerboard": Cheng2020AnchorCheckerboard, "bmshj2018-factorized-relu": FactorizedPriorReLU}

pytestmark = pytest.mark.slow


def compressai_model(name, checkpoint):
    model = CLASSES[name].from_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    model.update(force=False)
    return model.eval()


def assert_strings_and_y_hat_exact(name, s, strings, y_hat, dtype="float32"):
    """The stored sample `s` against CompressAI's (strings, ŷ) for its crop."""
    if name == "bmshj2018-factorized-relu":  # the single pass: y_string as the known families
        assert [s["y_string"]] == strings and "z_string" not in s
    else:
        assert read_container(s["y_string"])[0] == strings and "z_string" not in s
        assert "symbols" not in s
    assert s["meta"]["bits"] == 8 * sum(map(len, strings))
    assert s["y_hat"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(s["y_hat"], y_hat.astype(dtype), err_msg=s["__key__"])
    assert len(np.unique(y_hat)) > 3, "trivial ŷ would prove nothing"


@pytest.mark.parametrize("name,dtype", [(n, "float32") for n in CLASSES] + [("elic2022-official", "float16")])
def test_named_coder_224_crops_are_exact(name, dtype, checkpoint_factory, tmp_path):
    imagenet_train = DEMO
    ckpt = checkpoint_factory(name, 3)
    store = tmp_path / "store"
    cli("build", "--coder", name, "--quality", 3, "--weights", ckpt, "--dataset", "imagenet",
        "--root", imagenet_train, "--split", "train", "--y-hat-dtype", dtype, "--out", store, "--quiet")
    cli("verify", store, "--decode", 1, "--quiet")
    model = compressai_model(name, ckpt)
    checked = 0
    for s in stored(store, "train"):
        meta = s["meta"]
        assert meta["image_size"] == [224, 224] and meta["y_shape"] == [16, 16]
        strings, y_hat = reference(model, replay(imagenet_train / meta["source"], meta["augment"]))
        assert_strings_and_y_hat_exact(name, s, strings, y_hat, dtype)
        checked += 1
    assert checked == 4


@pytest.fixture(scope="module")
def cityscapes_frame(tmp_path_factory) -> Path:
    """A Cityscapes-layout train split of one real photo at the dataset's 2048x1024, all-road label map."""
    root = tmp_path_factory.mktemp("cityscapes")
    name = "aachen_000000_000019"
    for folder in ("leftImg8bit", "gtFine"):
        (root / folder / "train" / "aachen").mkdir(parents=True)
    Image.open(demo_photos()[0]).convert("RGB").resize((2048, 1024), Image.BILINEAR).save(
        root / "leftImg8bit" / "train" / "aachen" / f"{name}_leftImg8bit.png")
    Image.fromarray(np.full((1024, 2048), 7, np.uint8), "L").save(
        root / "gtFine" / "train" / "aachen" / f"{name}_gtFine_labelIds.png")
    return root


@pytest.mark.parametrize("name,dtype", [(n, "float32") for n in CLASSES] + [("elic2022-official", "float16")])
def test_named_coder_cityscapes_crop_is_exact(name, dtype, checkpoint_factory, cityscapes_frame, tmp_path):
    """One seg-train crop as pipelines/cityscapes.sh makes it: random rescale, 640x640 window, flip.
    float16: decompress()'s g_s input after one rounding to float16."""
    ckpt = checkpoint_factory(name, 3)
    store = tmp_path / "store"
    cli("build", "--coder", name, "--quality", 3, "--weights", ckpt, "--dataset", "cityscapes",
        "--root", cityscapes_frame, "--split", "train", "--variants", 1, "--y-hat-dtype", dtype,
        "--out", store, "--quiet")
    cli("verify", store, "--decode", 1, "--quiet")
    (s,) = stored(store, "train")
    meta = s["meta"]
    assert meta["augment"]["mode"] == "seg-train" and meta["augment"]["source_size"] == [2048, 1024]
    assert meta["image_size"] == [640, 640] and meta["y_shape"] == [40, 40]  # 640 is a multiple of 64: no padding
    strings, y_hat = reference(compressai_model(name, ckpt), replay(cityscapes_frame / meta["source"], meta["augment"]))
    assert_strings_and_y_hat_exact(name, s, strings, y_hat, dtype)
