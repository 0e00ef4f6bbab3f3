"""Feature taps: intermediate maps the knowledge-transfer loss compares (docs/method.md §5).

A tap names a submodule whose output is returned next to the logits, plus the
channel count and the stride ("reduction") of that output relative to the
ORIGINAL image, so a compressed-domain model's taps line up with the pixel
teacher's at the same stride. Hooks are registered for the duration of one
forward only: a model that holds hooks permanently breaks under ``deepcopy``
(EMA copies) and leaks references to the wrapper.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError

#: Strides at which the classification teacher stores features (docs/method.md §5).
CLASSIFICATION_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class Tap:
    name: str        # submodule path inside the tapped network, e.g. "layer2"
    channels: int
    reduction: int   # stride w.r.t. the original image (not w.r.t. the latent)


def taps_by_stride(feature_info, strides=CLASSIFICATION_STRIDES) -> list[Tap]:
    """Pick, for each stride, the LAST timm FeatureInfo entry at that reduction.

    The last entry at a stride is the end of the stage that runs at it, which is
    what the teacher taps (ResNet-50: layer2/3/4). Strides the network does not
    have are left out; :func:`check_tap_shapes` reports that as a mismatch.
    """
    by_reduction = {}
    for info in feature_info:
        by_reduction[info["reduction"]] = Tap(info["module"], info["num_chs"], info["reduction"])
    return [by_reduction[s] for s in strides if s in by_reduction]


@contextmanager
def capture(net: nn.Module, names):
    """Collect the outputs of submodules ``names`` of ``net`` during the ``with`` body."""
    out = {}
    modules = dict(net.named_modules())
    handles = []
    for name in names:
        if name not in modules:
            raise ConfigError(f"Feature tap {name!r} is not a submodule of {type(net).__name__}")
        # Default argument binds the name now, not at hook time.
        handles.append(modules[name].register_forward_hook(
            lambda _m, _inp, output, name=name: out.__setitem__(name, output)))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def shapes_of(features) -> list[tuple]:
    """Per-sample shapes (C, H, W) of a list or dict of feature maps, in order."""
    values = features.values() if isinstance(features, dict) else features
    return [tuple(f.shape[1:]) for f in values]


def check_tap_shapes(model_shapes, teacher_shapes, where: str = "", names=None, teacher: str = "") -> None:
    """Raise ConfigError unless the model's tap shapes equal the teacher's, one by one.

    Shapes are per-sample ``(C, H, W)`` tuples (a leading batch dim is dropped
    if both sides have one). `names` label the taps (e.g. the store fields
    ``teacher_s8``); `teacher` names the teacher model. The message says what
    differs: the number of taps, the channels per tap (another architecture), or
    the spatial size per tap (another crop size or stride).
    """
    ms = [tuple(s) for s in model_shapes]
    ts = [tuple(s) for s in teacher_shapes]
    if ms == ts:
        return
    prefix = f"{where}: " if where else ""
    if len(ms) != len(ts):
        raise ConfigError(
            f"{prefix}model has {len(ms)} feature taps {ms} but the teacher stores {len(ts)} {ts}; "
            "pick a model with taps at the teacher's strides, or rebuild the teacher features")
    names = list(names) if names is not None else [f"tap {i}" for i in range(len(ms))]
    who = f"teacher {teacher}" if teacher else "teacher"
    channels = [(n, m[0], t[0]) for n, m, t in zip(names, ms, ts) if m[:1] != t[:1]]
    if channels:
        detail = ", ".join(f"{n}: student {m} vs {who} {t}" for n, m, t in channels)
        raise ConfigError(
            f"{prefix}the student's channels differ from the teacher's ({detail}): the distance needs equal "
            f"channels per tap, so train the teacher's own architecture as the student"
            f"{f' ({teacher}-aa)' if teacher else ''}, or store a teacher of the student's architecture "
            "(`latentstore add-teacher`)")
    detail = "; ".join(f"{n}: model {m} vs teacher {t}" for n, m, t in zip(names, ms, ts) if m != t)
    raise ConfigError(
        f"{prefix}feature tap shapes differ: {detail} (model {ms}, teacher {ts}). "
        "Check that the latent comes from the same crop size as the teacher's image "
        "and that both use the same strides")


@torch.no_grad()
def feature_shapes(model: nn.Module, *inputs) -> list[tuple]:
    """Tap shapes of ``model`` for these inputs (one eval-mode forward, batch kept as given)."""
    was_training = model.training
    model.eval()
    try:
        _, feats = model(*inputs, return_features=True)
    finally:
        model.train(was_training)
    return shapes_of(feats)
