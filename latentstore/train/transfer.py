"""Pixel-to-compressed knowledge transfer (docs/method.md §5): loss = task + β · Σ_i d(F_i, T_i).

F_i are the student's tap maps, T_i the frozen teacher's maps stored beside
the latent (fields ``teacher_s<stride>`` or ``teacher_<layer>``). Distances,
each averaged over batch and elements so β does not scale with map size:
  mse  mean (F - T)²            (the paper's choice: beat MAE and cosine)
  mae  mean |F - T|
  cos  mean over positions of 1 - cos(F, T) along channels
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.taps import check_tap_shapes, feature_shapes


def _cos(f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (1 - F.cosine_similarity(f, t, dim=1, eps=1e-8)).mean()


DISTANCES = {
    "mse": lambda f, t: F.mse_loss(f, t),
    "mae": lambda f, t: F.l1_loss(f, t),
    "cos": _cos,
}


def transfer_loss(kind: str, feats: list, teachers: list) -> torch.Tensor:
    """Σ over taps of DISTANCES[kind](student map, teacher map); maps are [B, C, H, W]."""
    if kind not in DISTANCES:
        raise ConfigError(f"Invalid transfer {kind!r}: choose {', '.join(DISTANCES)} (or none)")
    if len(feats) != len(teachers):
        raise ConfigError(f"{len(feats)} student taps but {len(teachers)} teacher maps")
    return sum(DISTANCES[kind](f.float(), t.to(f.device, non_blocking=True).float()) for f, t in zip(feats, teachers))


def tap_list(feats) -> list:
    """Student feature maps in tap order (TapClassifier gives a list, PSPNet a dict by tap name)."""
    return list(feats.values()) if isinstance(feats, dict) else list(feats)


def teacher_fields(model: nn.Module, split_info: dict) -> list[str]:
    """The store fields that pair with `model`'s taps, in tap order.

    Taps pair by stride (``teacher_s8``, for classifiers) or, when the store's
    teacher was chosen by layer name (segmentation), by that name
    (``teacher_layer4``). A tap with no stored map is an error listing what the store has.
    """
    fp = split_info.get("teacher")
    if not fp:
        raise ConfigError("--transfer needs teacher features in the store: build it with --teacher, "
                          "or run `latentstore add-teacher`, or use --transfer none")
    stored = [t["field"] for t in fp["taps"]]
    taps = getattr(model, "taps", None)
    if not taps:
        raise ConfigError(f"{getattr(model, 'registry_name', type(model).__name__)} has no feature taps "
                          "for knowledge transfer: use --transfer none")
    by_layer = bool(fp.get("layers"))
    wanted = [f"teacher_{t.name}" if by_layer else f"teacher_s{t.reduction}" for t in taps]
    if by_layer:  # a segmentation teacher stores a subset of layers; transfer on those
        wanted = [w for w in wanted if w in stored]
    if wanted != stored:
        raise ConfigError(f"The model's taps pair with fields {wanted}, the store holds {stored}: "
                          "choose a model with taps at the teacher's strides/layers, or rebuild the teacher")
    return stored


def student_taps(model: nn.Module, fields: list[str]) -> list[int]:
    """Indices into the model's tap list of the taps that pair with `fields`."""
    names = [f"teacher_{t.name}" for t in model.taps]
    strides = [f"teacher_s{t.reduction}" for t in model.taps]
    return [names.index(f) if f in names else strides.index(f) for f in fields]


def check_shapes(model: nn.Module, split_info: dict, fields: list[str], inputs: list) -> None:
    """Before the first step: the model's tap shapes on one real sample equal the stored teacher maps."""
    shapes = feature_shapes(model, *inputs)
    picked = [shapes[i] for i in student_taps(model, fields)]
    stored = split_info["teacher"].get("feature_shapes") or {}
    check_tap_shapes(picked, [tuple(stored[f]) for f in fields], where="knowledge transfer", names=fields,
                     teacher=split_info["teacher"].get("name", ""))


class Transfer:
    """--transfer for one run: which teacher fields to read, which taps they pair with, and the loss."""

    def __init__(self, kind: str = "none", beta: float = 0.0, fields: tuple = (), taps: tuple = ()):
        self.kind, self.beta, self.fields, self.taps = kind, beta, tuple(fields), tuple(taps)

    @classmethod
    def prepare(cls, cfg, model: nn.Module, manifest: dict, inputs: tuple) -> "Transfer":
        """Check the store's teacher (fingerprint, if --teacher names one; tap shapes always) before step 1."""
        if cfg.transfer == "none":
            return cls()
        info = manifest["splits"][cfg.split]
        fields = teacher_fields(model, info)
        if cfg.teacher:
            from ..teacher.fingerprint import check_teacher
            from ..teacher.load import load_teacher  # builds the teacher to hash its weights

            fp = info["teacher"]
            expected = load_teacher(cfg.teacher, cfg.teacher_weights, strides=fp.get("strides") or (),
                                    layers=fp.get("layers") or (), dtype=fp["dtype"])
            check_teacher(manifest, expected, cfg.split)
        from .model import probe_inputs

        check_shapes(model, info, fields, probe_inputs(info, inputs))
        return cls(cfg.transfer, cfg.beta, tuple(fields), tuple(student_taps(model, fields)))

    def __call__(self, feats, batch: dict) -> torch.Tensor:
        """β-free transfer loss of one batch (the trainer multiplies by β)."""
        taps = tap_list(feats)
        return transfer_loss(self.kind, [taps[i] for i in self.taps], [batch[f] for f in self.fields])
