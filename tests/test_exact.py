"""Stores built by the real CLI at the real sizes, judged by CompressAI alone.

The reference path shares no code with the build: PIL opens the source image,
the test replays the stored augmentation parameters with its own code, makes a
fresh contiguous float tensor, pads it, and runs ``model.compress()`` and
``model.decompress()`` at one thread. Strings must be equal, and ŷ bit for bit
(float32) or after the same float16 rounding (float16). The coders are those
whose ŷ holds μ (a wrong kernel shifts μ by an ulp), loaded from a checkpoint
file whose symbols are not trivial.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from compressai import zoo
from PIL import Image, ImageOps

from latentstore.commands.cli import main
from latentstore.store.readers import Sample, iter_shard

from conftest import DEMO, demo_photos

MU_CODERS = ["mbt2018-mean", "mbt2018", "cheng2020-anchor", "cheng2020-attn"]
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST,
            "bicubic": Image.Resampling.BICUBIC}

pytestmark = pytest.mark.slow


def cli(*args):
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code == 0, f"latentstore {' '.join(map(str, args))} exited {exc.code}"


def replay(path: Path, params: dict) -> Image.Image:
    """The stored augmentation, replayed from its parameters: box -> size, mirror, pad."""
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    assert list(img.size) == params["source_size"]
    left, top, w, h = params["box"]
    box = (left, top, min(left + w, img.width), min(top + h, img.height))
    out = img.resize(tuple(params.get("content_size", params["size"])), RESAMPLE[params["interpolation"]], box=box)
    if params["flip"]:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if any(params.get("pad", ())):
        canvas = Image.new("RGB", tuple(params["size"]))
        canvas.paste(out, tuple(params["pad"][:2]))
        out = canvas
    return out


def g_s_input(model, call):
    """(call()'s result, the tensor CompressAI's g_s received during it), at one thread, without grad."""
    seen = []
    hook = model.g_s.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            result = call()
    finally:
        torch.set_num_threads(before)
        hook.remove()
    return result, seen[0][0].numpy()


def compress_and_decompress(model, x):
    """compress()'s output, and decompress()'s g_s input for its strings (batch 1)."""
    def both():
        out = model.compress(x)
        model.decompress(out["strings"], out["shape"])
        return out
    return g_s_input(model, both)


def reference(model, crop: Image.Image):
    """(strings, ŷ) from CompressAI's compress() and decompress() on a fresh NCHW tensor."""
    x = torch.tensor(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    x = x.contiguous()
    h, w = x.shape[-2:]
    ph, pw = -h % 64, -w % 64
    x = torch.nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    out, y_hat = compress_and_decompress(model, x)
    return [s[0] for s in out["strings"]], y_hat


def stored(store: Path, split: str):
    manifest = json.loads((store / "manifest.json").read_text())
    for shard in manifest["splits"][split]["shards"]:
        # as trainers read
        yield from map(Sample.as_item, iter_shard(store / shard["path"], shard["path"], shard["samples"], record=shard))


def zoo_model(name: str, quality: int, checkpoint: Path):
    """The coder as a CompressAI user would load it: the zoo's architecture, our checkpoint file."""
    model = getattr(zoo, name.replace("-", "_"))(quality, pretrained=False)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    model.update(force=False)
    return model.eval()


def assert_exact_against_compressai(store: Path, split: str, model, source_root: Path, dtype=np.float32) -> int:
    checked = 0
    for s in stored(store, split):
        meta = s["meta"]
        strings, y_hat = reference(model, replay(source_root / meta["source"], meta["augment"]))
        assert [s["y_string"], s["z_string"]] == strings, f"{s['__key__']}: strings differ from compress()"
        assert s["y_hat"].dtype == dtype
        np.testing.assert_array_equal(s["y_hat"], y_hat.astype(dtype), err_msg=s["__key__"])
        assert len(np.unique(s["symbols"])) > 3, "trivial symbols would prove nothing"
        checked += 1
    return checked


@pytest.fixture(scope="module")
def imagenet_train() -> Path:
    """The bundled demo photos (ImageNet layout): 4 train images of their own sizes."""
    return DEMO


@pytest.mark.parametrize("coder", MU_CODERS)
def test_imagenet_224_crops_are_exact(coder, checkpoint_factory, imagenet_train, tmp_path):
    ckpt = checkpoint_factory(coder, 3)
    store = tmp_path / "store"
    cli("build", "--coder", coder, "--quality", 3, "--weights", ckpt, "--dataset", "imagenet",
        "--root", imagenet_train, "--split", "train", "--y-hat-dtype", "float32",
        "--out", store, "--quiet")
    meta = next(stored(store, "train"))["meta"]
    assert meta["image_size"] == [224, 224] and meta["y_shape"] == [16, 16]  # 224 padded to 256
    assert assert_exact_against_compressai(store, "train", zoo_model(coder, 3, ckpt), imagenet_train) == 4


def test_batch_size_encoders_and_float16_are_exact(checkpoint_factory, imagenet_train, tmp_path):
    """Batch 1 with two encoder processes, float16 ŷ: the same strings, ŷ rounded from the exact one."""
    coder = "cheng2020-anchor"
    ckpt = checkpoint_factory(coder, 3)
    store = tmp_path / "store"
    cli("build", "--coder", coder, "--quality", 3, "--weights", ckpt, "--dataset", "imagenet",
        "--root", imagenet_train, "--split", "train", "--variants", 2, "--shard-size", 2,
        "--batch-size", 1, "--encoders", 2, "--y-hat-dtype", "float16", "--out", store, "--quiet")
    assert assert_exact_against_compressai(store, "train", zoo_model(coder, 3, ckpt), imagenet_train,
                                           dtype=np.float16) == 8


@pytest.fixture(scope="module")
def cityscapes_256x512(tmp_path_factory) -> Path:
    """A Cityscapes-layout val split of real photos at 512x256 with all-ignore label maps."""
    root = tmp_path_factory.mktemp("cityscapes")
    for n, photo in enumerate(demo_photos()[:2]):
        name = f"frankfurt_{n:06d}_000019"
        for folder in ("leftImg8bit", "gtFine"):
            (root / folder / "val" / "frankfurt").mkdir(parents=True, exist_ok=True)
        Image.open(photo).convert("RGB").resize((512, 256), Image.BILINEAR).save(
            root / "leftImg8bit" / "val" / "frankfurt" / f"{name}_leftImg8bit.png")
        Image.fromarray(np.full((256, 512), 7, np.uint8), "L").save(
            root / "gtFine" / "val" / "frankfurt" / f"{name}_gtFine_labelIds.png")
    return root


@pytest.mark.parametrize("coder", ["mbt2018-mean", "cheng2020-anchor"])
def test_cityscapes_256x512_is_exact(coder, checkpoint_factory, cityscapes_256x512, tmp_path):
    ckpt = checkpoint_factory(coder, 3)
    store = tmp_path / "store"
    cli("build", "--coder", coder, "--quality", 3, "--weights", ckpt, "--dataset", "cityscapes",
        "--root", cityscapes_256x512, "--split", "val", "--y-hat-dtype", "float32", "--out", store, "--quiet")
    meta = next(stored(store, "val"))["meta"]
    assert meta["image_size"] == [256, 512] and meta["y_shape"] == [16, 32]
    source_root = cityscapes_256x512
    assert assert_exact_against_compressai(store, "val", zoo_model(coder, 3, ckpt), source_root) == 2
