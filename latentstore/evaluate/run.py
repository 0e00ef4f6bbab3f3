"""Evaluating a checkpoint: rebuild its model, run it over this rank's batches, reduce the counts.

One loop (``evaluate``) serves both tasks; the task's scorer (``SCORERS``) turns logits into
integer counts and the counts into the record's metrics. Under torchrun the process group is
joined with the trainers' ``setup`` (nccl on CUDA, gloo on CPU); each rank reads its share of
the variant (``batches``), and the integer counts are summed once at the end, so the numbers
equal a single-process run exactly.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from ..errors import ConfigError, LatentstoreError, StoreError
from ..read.dataset import pick_split
from ..read.ranks import rank_and_world
from ..store.format import read_manifest
from ..train.store_identity import check_compatible, store_summary
from .batches import eval_batches, eval_fields, with_progress
from .checkpoint_view import CheckpointView, read_checkpoint
from .metrics import IGNORE_INDEX, ConfusionMatrix, TopK
from .options import EvalConfig, parse_args
from .rate import BitCounter
from .record import make_record, summary, write_outputs


def build_model(ckpt: CheckpointView, manifest: dict, split: str, device: str = "cpu") -> torch.nn.Module:
    """The checkpoint's model, for this store's latent channels, with its trained weights (strict load)."""
    from ..models import create_model

    channels = manifest["splits"][split]["latent_shape"][0]
    coder = None
    if ckpt.model_name.startswith("decode+"):
        # Architecture only: g_s's trained weights come with the checkpoint's state dict. Only these
        # pixel-domain baselines need CompressAI on the evaluating node.
        from ..coders.registry import load_coder

        c = manifest["coder"]
        coder = load_coder(c["name"], c["quality"], "untrained").model
    model = create_model(ckpt.model_name, channels, ckpt.num_classes, coder=coder)
    missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise StoreError(f"checkpoint {ckpt.path} does not fit model {ckpt.model_name} "
                         f"({channels} latent channels, {ckpt.num_classes} classes): missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.to(device).eval()


def _on_cuda(cfg: EvalConfig) -> bool:
    return torch.device(cfg.device).type == "cuda"


def _forward(model, batch: dict, inputs: tuple, region, cfg: EvalConfig) -> torch.Tensor:
    """The model's logits of one batch in cfg.precision (float32 logits whatever it ran in), its inputs
    cropped to the split's valid latent region exactly as the trainers crop them."""
    from ..train.model import model_inputs
    from ..train.speed import autocast, autocast_dtype

    kind = torch.device(cfg.device).type
    with autocast(kind, autocast_dtype(cfg.precision, kind)):
        return model(*model_inputs(batch, inputs, region, cfg.device)).float()


def _model_task(name: str) -> str | None:
    """classification | segmentation: what the model registry says a model name is for (the checkpoint's
    model name decides, as it decides the model built); None for a name it does not know, which
    build_model then refuses."""
    from ..models import resolve

    try:
        return resolve(name)[0].task
    except LatentstoreError:
        return None


def _prepare(cfg: EvalConfig, task: str):
    from ..train.model import input_fields, valid_crop
    from ..train.speed import prepare_model

    manifest = read_manifest(cfg.store)
    split = pick_split(manifest, cfg.split, cfg.store)
    ckpt = read_checkpoint(cfg.checkpoint)
    trained_for = _model_task(ckpt.model_name)
    if trained_for and trained_for != task:   # before the store checks: they would blame the store
        raise ConfigError(f"{cfg.checkpoint} is a {trained_for} checkpoint ({ckpt.model_name}); "
                          f"use eval/{'segment' if trained_for == 'segmentation' else 'classify'}.py")
    check_compatible(ckpt.trained_on, store_summary(manifest, split), task)
    model = build_model(ckpt, manifest, split, cfg.device)
    prepare_model(model, cfg.precision, torch.device(cfg.device))
    if model.task != task:
        raise ConfigError(f"{ckpt.model_name} is a {model.task} model; this is the {task} eval")
    inputs = input_fields(ckpt.model_name)  # refuses pixel-domain models
    region = valid_crop(manifest["splits"][split])
    fields = eval_fields(manifest["splits"][split], inputs, task)
    return manifest, split, ckpt, model, fields, inputs, region


def _batches(cfg: EvalConfig, split: str, fields: tuple, rank: int, world: int):
    data, loader = eval_batches(cfg.store, split, cfg.variant, fields, cfg.batch_size, cfg.workers, rank, world,
                                pin_memory=_on_cuda(cfg))
    return with_progress(loader, data, split, cfg.progress and rank == 0)


# A scorer: update(logits, batch) adds one batch's counts, all_reduce() sums them over ranks, and
# metrics(rate) gives the record's task-specific entries, in the order eval.json has always listed them.
class _Classification:
    """Classification: top-1/top-5 hits against each sample's label."""

    def __init__(self, ckpt: CheckpointView, info: dict, region):
        self.num_classes, self.acc = ckpt.num_classes, TopK((1, 5))

    def update(self, logits: torch.Tensor, batch: dict) -> None:
        self.acc.update(logits, batch["label"])

    def all_reduce(self) -> None:
        self.acc.all_reduce()

    def metrics(self, rate: BitCounter) -> dict:
        return {**self.acc.compute(), "correct": self.acc.correct(), "num_classes": self.num_classes}


class _Segmentation:
    """Segmentation: each label map against its logits upsampled and cut to the unpadded image."""

    def __init__(self, ckpt: CheckpointView, info: dict, region):
        self.classes = info.get("classes") or [str(i) for i in range(ckpt.num_classes)]
        self.region, self.cm = region, ConfusionMatrix(ckpt.num_classes, IGNORE_INDEX)

    def update(self, logits: torch.Tensor, batch: dict) -> None:
        for i, meta in enumerate(batch["meta"]):
            self.cm.update(predict_labels(logits[i], meta, self.region), batch["label_map"][i])

    def all_reduce(self) -> None:
        self.cm.all_reduce()

    def metrics(self, rate: BitCounter) -> dict:
        cm, classes, iou = self.cm, self.classes, self.cm.iou()
        # "samples" comes from the rate: the matrix counts pixels, not samples.
        return {"miou": 100 * cm.miou(), "pixel_accuracy": 100 * cm.pixel_accuracy(),
                "classes": list(classes),  # class order (JSON objects are written with sorted keys)
                "per_class_iou": {name: (None if math.isnan(v) else 100 * float(v)) for name, v in zip(classes, iou)},
                "labeled_pixels": cm.pixels, "num_classes": cm.num_classes,
                "confusion_matrix": cm.matrix.tolist(), "samples": int(rate.counts[2])}


SCORERS = {"classification": _Classification, "segmentation": _Segmentation}


@torch.no_grad()
def evaluate(cfg: EvalConfig, task: str) -> dict:
    """The eval record of a ``task`` checkpoint on one stored split: its ``SCORERS`` metrics and the bpp."""
    start = time.perf_counter()
    if cfg.device == "auto":  # a library caller's default (run() has picked the device already)
        cfg = replace(cfg, device="cuda" if torch.cuda.is_available() else "cpu")
    manifest, split, ckpt, model, fields, inputs, region = _prepare(cfg, task)
    score = SCORERS[task](ckpt, manifest["splits"][split], region)
    rate = BitCounter(container=manifest["coder"].get("path") == "generic")
    # Asked here, not taken from run()'s setup: callers that joined the process group themselves
    # evaluate too, and the group gives the same answer either way.
    rank, world = rank_and_world()
    for batch in _batches(cfg, split, fields, rank, world):
        score.update(_forward(model, batch, inputs, region, cfg), batch)
        rate.update(batch)
    score.all_reduce()
    rate.all_reduce()
    return make_record(cfg, task, manifest, split, ckpt, model, score.metrics(rate), rate, world, start)


def evaluate_classification(cfg: EvalConfig) -> dict:
    """Top-1/top-5 (percent) and bpp of a classification checkpoint on one stored split."""
    return evaluate(cfg, "classification")


def evaluate_segmentation(cfg: EvalConfig) -> dict:
    """mIoU (percent) over the classes, per-class IoU and bpp of a segmentation checkpoint."""
    return evaluate(cfg, "segmentation")


def predict_labels(logits: torch.Tensor, meta: dict, region=None) -> torch.Tensor:
    """Class map at label resolution from one sample's logits [K, h, w].

    The model saw latent cells ``region`` = (row0, row1, col0, col1) of the
    padded input (the valid region; None = all), i.e. padded pixels
    [16·row0, 16·row1) × [16·col0, 16·col1). Logits are bilinearly upsampled to
    that pixel size when the model returns them smaller, then the zero padding
    left in it is cut away, leaving exactly the unpadded image, which is the
    label map's size. Argmax comes last, so scores are interpolated, not labels.
    """
    pad, (h, w) = meta["padding"], meta["image_size"]
    if region is None:
        region = (0, (pad["top"] + h + pad["bottom"]) // 16, 0, (pad["left"] + w + pad["right"]) // 16)
    r0, r1, c0, c1 = region
    size = (16 * (r1 - r0), 16 * (c1 - c0))
    top, left = pad["top"] - 16 * r0, pad["left"] - 16 * c0
    if top < 0 or left < 0 or top + h > size[0] or left + w > size[1]:
        raise StoreError(f"key {meta['key']}: its image ({h}×{w}, padding {pad}) lies outside the latent region "
                         f"{list(region)} the model sees; the split's valid_region does not cover this sample")
    if tuple(logits.shape[-2:]) != size:
        logits = F.interpolate(logits[None].float(), size, mode="bilinear", align_corners=False)[0]
    return logits[:, top:top + h, left:left + w].argmax(0).cpu()


def run(cfg: EvalConfig, task: str) -> dict:
    """Evaluate, and on rank 0 write eval.json + eval.md; every rank returns the (reduced) record."""
    from ..train.ddp import cleanup, setup

    d = setup(cfg.device)
    try:
        cfg = replace(cfg, device=str(d.device))
        record = evaluate(cfg, task)
        if d.main:
            md = write_outputs(record, cfg.out_path())
            print(md)
            print(summary(record, cfg.out_path()))
    finally:
        cleanup()
    return record


def main(argv, task: str) -> int:
    """Entry point of eval/classify.py and eval/segment.py: user errors print one line, exit 2."""
    cfg = parse_args(argv, task)
    try:
        run(cfg, task)
    except LatentstoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
