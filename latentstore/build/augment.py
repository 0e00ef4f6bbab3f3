"""Pure, seeded augmentation: ``params = sample_params(rng, ...)``; ``apply(img, params)``.

Sampling and applying are split so that the exact parameters of every stored
variant can be written next to it (docs/method.md §3) and replayed later in the pixel
domain. Every mode reduces to one geometric recipe: take a box of the source
image (in source pixels, possibly fractional), resample it to the output size,
optionally mirror it. ``apply`` only knows that recipe, so train and val share
one code path and a new mode (e.g. a joint Cityscapes crop, where the label map
is replayed with ``apply(label, params, resample="nearest")``) only needs a new
sampler in ``SAMPLERS``.

Params (JSON): ``version``, ``mode``, ``source_size`` [w, h], ``box`` [left, top,
width, height] in source pixels (integers for train, fractional for val),
``flip``, ``size`` [w, h] of the output, ``resize`` (val's shorter side, None
for train), ``resized_size`` (val only) and ``interpolation``. Train crops are
resampled from the source with the filter reading real pixels just past the
box edge, where torchvision crops first and clamps: borders can differ from
torchvision by a few levels; val matches Resize+CenterCrop to within 1 level.

Randomness comes only from the ``numpy.random.Generator`` passed in, which
``variant_rng`` derives from (seed, key, variant): a variant is the same in any
process, in any order.
"""
from __future__ import annotations

import hashlib
import math
from typing import Callable

import numpy as np
from PIL import Image

from ..errors import ConfigError, InputError

#: Bump when sampling or applying changes what a given (seed, key, variant) produces.
VERSION = 1

# PIL filter per interpolation name stored in params.
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST,
            "bicubic": Image.Resampling.BICUBIC}

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)


def variant_rng(seed: int, key: str, variant: int) -> np.random.Generator:
    """Generator deterministic in (seed, key, variant) alone.

    Hashing the three (rather than spawning from a shared stream) makes a
    sample's randomness independent of iteration order, sharding and workers.
    """
    digest = hashlib.sha256(f"latentstore-augment\0{int(seed)}\0{key}\0{int(variant)}".encode()).digest()
    entropy = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 32, 4)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def _rrc_box(rng: np.random.Generator, width: int, height: int) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop.get_params, drawing from ``rng``; returns (left, top, w, h)."""
    area = height * width
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target_area = area * rng.uniform(SCALE[0], SCALE[1])
        aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, w, h
    # Fallback to central crop, as torchvision does.
    in_ratio = width / height
    if in_ratio < min(RATIO):
        w, h = width, int(round(width / min(RATIO)))
    elif in_ratio > max(RATIO):
        w, h = int(round(height * max(RATIO))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _sample_train(rng, width, height, crop, resize):
    left, top, w, h = _rrc_box(rng, width, height)
    flip = bool(rng.random() < 0.5)
    return {"box": [left, top, w, h], "flip": flip, "resize": None}


def _sample_val(rng, width, height, crop, resize):
    # torchvision Resize(resize) then CenterCrop(crop), expressed as a box in
    # source pixels: the shorter side maps to `resize`, the longer one is
    # truncated like torchvision's _compute_resized_output_size.
    if width <= height:
        rw, rh = resize, int(resize * height / width)
    else:
        rw, rh = int(resize * width / height), resize
    # CenterCrop offsets in the resized image, as torchvision computes them.
    cleft, ctop = int(round((rw - crop) / 2.0)), int(round((rh - crop) / 2.0))
    sx, sy = width / rw, height / rh
    return {"box": [cleft * sx, ctop * sy, crop * sx, crop * sy], "flip": False, "resize": resize,
            "resized_size": [rw, rh]}


SEG_SCALE = (0.5, 2.0)   # docs/method.md §3: Cityscapes train crops come after a random rescale in this range


def _sample_seg_train(rng, width, height, crop, resize, scale=SEG_SCALE):
    """Random rescale, random crop x crop window (padded where it leaves the image), flip p=0.5.

    Expressed as a box of the *source* whose content is resampled to
    ``content_size`` = min(crop, scaled size); ``pad`` [left, top, right, bottom]
    then fills the rest of the crop (image 0, label 255). Box edges are the
    crop window's edges in the rescaled image divided by the exact scale
    factors, so the pixels equal "resize the whole image, then crop".
    """
    s = float(rng.uniform(scale[0], scale[1]))
    sw, sh = max(1, round(width * s)), max(1, round(height * s))
    cw, ch = min(crop, sw), min(crop, sh)
    left, top = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
    flip = bool(rng.random() < 0.5)
    fx, fy = width / sw, height / sh
    return {"scale": s, "scaled_size": [sw, sh], "box": [left * fx, top * fy, cw * fx, ch * fy],
            "content_size": [cw, ch], "pad": [0, 0, crop - cw, crop - ch], "flip": flip, "resize": None}


def _sample_seg_val(rng, width, height, crop, resize):
    """The full image as it is (Cityscapes val: 1024x2048), one variant: nothing is random."""
    return {"box": [0, 0, width, height], "size": [width, height], "flip": False, "resize": None}


#: mode -> sampler(rng, width, height, crop, resize, **options) -> geometric params. Add modes here.
SAMPLERS: dict[str, Callable[..., dict]] = {"train": _sample_train, "val": _sample_val,
                                            "seg-train": _sample_seg_train, "seg-val": _sample_seg_val}
#: modes that store one deterministic variant per image
SINGLE_VARIANT_MODES = frozenset({"val", "seg-val"})


def sample_params(rng: np.random.Generator, image_size: tuple[int, int], mode: str,
                  crop: int = 224, resize: int = 256, **options) -> dict:
    """Draw the augmentation of one variant for an image of ``image_size`` = (width, height).

    mode "train": RandomResizedCrop(crop, scale=(0.08, 1), ratio=(3/4, 4/3)) + flip p=0.5.
    mode "val": shorter side to ``resize`` (bilinear, antialiased), center crop ``crop``, no flip.
    mode "seg-train": random scale (``scale=(lo, hi)``, default 0.5-2.0), random crop x crop
    window padded past the image edge, flip p=0.5. mode "seg-val": the full image.
    Returns a JSON-able dict with everything ``apply`` needs to replay it.
    """
    if mode not in SAMPLERS:
        raise ConfigError(f"Unknown augmentation mode {mode!r}: choose one of {sorted(SAMPLERS)}")
    if mode == "val" and resize < crop:
        raise ConfigError(f"val resize {resize} is smaller than crop {crop}: choose resize >= crop")
    width, height = int(image_size[0]), int(image_size[1])
    if width < 1 or height < 1:
        raise InputError(f"Cannot augment an image of size {width}x{height}")
    params = {"version": VERSION, "mode": mode, "source_size": [width, height],
              "size": [crop, crop], "interpolation": "bilinear"}
    params.update(SAMPLERS[mode](rng, width, height, crop, resize, **options))
    return params


def apply(img: Image.Image, params: dict, resample: str | None = None, fill: int = 0) -> Image.Image:
    """Replay ``params`` on ``img``: resample the box to params["size"], then mirror if flipped.

    Bit-exact for a given Pillow build: the same image and params always give
    the same pixels. ``resample`` overrides the stored interpolation, e.g.
    "nearest" for a label map that shares the image's params. Where params
    carry ``pad`` (seg-train crops past the image edge), the content is
    resampled to ``content_size``, mirrored, then padded with ``fill`` (0 for
    images, 255 = ignore for label maps) to params["size"].
    """
    if params.get("version") != VERSION:
        raise ConfigError(f"Augmentation params version {params.get('version')!r} is not "
                          f"{VERSION}, the version this latentstore replays")
    if list(img.size) != list(params["source_size"]):
        raise InputError(f"Image is {img.size[0]}x{img.size[1]} but the params were sampled for "
                         f"{params['source_size'][0]}x{params['source_size'][1]}: wrong source image?")
    name = resample or params["interpolation"]
    if name not in RESAMPLE:
        raise ConfigError(f"Unknown interpolation {name!r}: choose one of {sorted(RESAMPLE)}")
    left, top, w, h = params["box"]
    # Resampling straight from the source box (not crop-then-resize) keeps one
    # exact path for integer train boxes and fractional val boxes alike.
    # min(): float box edges may overshoot the image by an ulp, which PIL refuses.
    box = (left, top, min(left + w, img.size[0]), min(top + h, img.size[1]))
    out = img.resize(tuple(params.get("content_size", params["size"])), RESAMPLE[name], box=box)
    if params["flip"]:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if any(params.get("pad", ())):
        left, top, _, _ = params["pad"]
        canvas = Image.new(out.mode, tuple(params["size"]), (fill,) * len(out.getbands()))
        canvas.paste(out, (left, top))
        out = canvas
    return out
