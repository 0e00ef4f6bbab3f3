"""The named coders beyond the six single-pass families, built by the real CLI at 224 crops (padded
to 256), judged by CompressAI alone, as tests/test_exact.py judges the others.

The reference loads the class from the checkpoint file with CompressAI, replays the stored
augmentation with the test's own code, runs compress() and decompress() at one thread and reads the
strings container with struct and json (docs/FORMAT.md "Nested strings"): nothing of the build.
"""

import numpy as np
import pytest
import torch
from compressai.models import Cheng2020AnchorCheckerboard, Elic2022Chandelier, Elic2022Official, FactorizedPriorReLU

from conftest import DEMO
from test_exact import cli, reference, replay, stored
from test_generic import read_container

CLASSES = {"elic2022-official": Elic2022Official, "elic2022-chandelier": Elic2022Chandelier,
           "cheng2020-checkerboard": Cheng2020AnchorCheckerboard, "bmshj2018-factorized-relu": FactorizedPriorReLU}

pytestmark = pytest.mark.slow


def compressai_model(name, checkpoint):
    model = CLASSES[name].from_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    model.update(force=False)
    return model.eval()


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
        if name == "bmshj2018-factorized-relu":  # the single pass: y_string as the known families
            assert [s["y_string"]] == strings and "z_string" not in s
        else:
            assert read_container(s["y_string"])[0] == strings and "z_string" not in s
            assert "symbols" not in s
        assert meta["bits"] == 8 * sum(map(len, strings))
        assert s["y_hat"].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(s["y_hat"], y_hat.astype(dtype), err_msg=s["__key__"])
        assert len(np.unique(y_hat)) > 3, "trivial ŷ would prove nothing"
        checked += 1
    assert checked == 4
