"""The model a trainer trains, built from the store manifest, and the store fields it reads.

Shapes and channel counts come from the manifest, never from flags. The
latent is cropped to the split's valid region (rows/cols 1..14 of a 224 crop
padded to 256), so tap shapes line up with the teacher's maps of the unpadded
crop, as in the paper (ŷ C×14×14 at 224).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, WeightsError
from ..models import create_model, resolve

#: model input name -> store field
INPUT_FIELDS = {"y_hat": "y_hat", "sigma_hat": "scales"}


def input_fields(name: str) -> tuple:
    entry, _ = resolve(name)
    if "image" in entry.inputs:
        raise ConfigError(f"{name} is a pixel-domain model: the store holds latents, train a -aa, cresnet, "
                          "reshape+ or decode+ model")
    return tuple(INPUT_FIELDS[i] for i in entry.inputs)


def load_store_coder(manifest: dict, split: str, weights: str = ""):
    """The CompressAI coder the store was built with (for decode+<model>), checked by weights sha256.

    Only these pixel-domain baselines need CompressAI: every other model trains on stored tensors.
    """
    from ..coders.custom import check_same_code
    from ..coders.registry import load_coder

    c = manifest["splits"][split].get("config", {})
    recorded = manifest["coder"]
    coder = load_coder(recorded["name"], recorded["quality"], weights or c.get("weights", "pretrained"),
                       seed=c.get("seed", 0), metric=c.get("metric", "mse"))
    check_same_code(recorded["name"], recorded["weights"].get("code"))
    if coder.weights["sha256"] != recorded["weights"]["sha256"]:
        raise WeightsError(f"decode+: the coder weights loaded ({coder.weights['sha256'][:12]}) are not the ones "
                           f"the store was built with ({recorded['weights']['sha256'][:12]}): pass --coder-weights")
    return coder.model.eval()


def build_model(cfg, manifest: dict, task: str) -> nn.Module:
    """create_model(cfg.model) for the store's latent channels and classes; checks the task matches."""
    info = manifest["splits"][cfg.split]
    entry, _ = resolve(cfg.model)
    if entry.task != task:
        raise ConfigError(f"{cfg.model} is a {entry.task} model; this trainer does {task}")
    classes = len(info.get("classes") or [])
    if classes < 2:
        raise ConfigError(f"split {cfg.split!r} records {classes} classes: is it a labelled {task} store?")
    coder = load_store_coder(manifest, cfg.split, cfg.coder_weights) if cfg.model.startswith("decode+") else None
    torch.manual_seed(cfg.seed)  # the same init on every rank and in every rerun
    return create_model(cfg.model, manifest["coder"]["channels"], classes, pixel_weights=cfg.pixel_weights,
                        coder=coder)


def valid_crop(info: dict):
    """(row0, row1, col0, col1) of the latent cells that see image pixels."""
    return tuple(info["valid_region"])


def model_inputs(batch: dict, fields: tuple, region, device) -> list:
    """The model's float32 input tensors from a batch, cropped to the valid latent region."""
    r0, r1, c0, c1 = region
    # Copy first, crop and widen on the device: a cropped view is not contiguous, and its copy
    # would go through pageable memory (a blocking copy) instead of the pinned batch. Loaders
    # carry ŷ as stored (float16 by default: half the bytes); widening to float32 is exact.
    return [batch[f].to(device, non_blocking=True)[..., r0:r1, c0:c1].float() for f in fields]


def probe_inputs(info: dict, fields: tuple) -> list:
    """Zero inputs of the stored (cropped) latent shape: enough to learn the model's tap shapes."""
    c, h, w = info["latent_shape"]
    r0, r1, c0, c1 = valid_crop(info)
    return [torch.zeros(1, c, h, w)[..., r0:r1, c0:c1] for _ in fields]
