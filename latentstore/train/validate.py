"""Validation during training: the task's metric on a stored split every --val-every epochs, and best.pt.

Each rank scores its share of the split (variant 0, every sample once) and the
exact integer counts are summed over ranks, as eval/ does. The best checkpoint
is the run's state after the epoch with the highest metric (top-1 or mIoU; the
first such epoch on a tie), written before last.pt: a run killed between the two
redoes that epoch on resume and writes the same best.pt again.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..evaluate.metrics import IGNORE_INDEX, ConfusionMatrix, TopK
from ..read.dataset import open_store
from .model import model_inputs
from .speed import autocast, autocast_dtype

BEST = "best.pt"
METRIC = {"classification": "top1", "segmentation": "miou"}   # the metric best.pt is chosen by


def val_split(cfg, manifest: dict) -> str | None:
    """The split to validate on: --val-split auto is the store's 'val' split where it has one (and
    trains on another); none disables validation."""
    splits = manifest["splits"]
    if cfg.val_split == "none":
        return None
    if cfg.val_split == "auto":
        return "val" if "val" in splits and cfg.split != "val" else None
    if cfg.val_split not in splits:
        raise ConfigError(f"--val-split {cfg.val_split}: {cfg.store} holds splits {', '.join(sorted(splits))} "
                          "(or pass --val-split none)")
    return cfg.val_split


class Validator:
    """Scores the model on one split; `best` ({metric, value, step, epoch} or None) travels in checkpoints."""

    def __init__(self, cfg, d, task: str, split: str, inputs: tuple, region, num_classes: int, per_rank: int):
        self.cfg, self.d, self.task, self.split = cfg, d, task, split
        self.inputs, self.region, self.num_classes = inputs, region, num_classes
        labels = ("label",) if task == "classification" else ("label_map", "meta")
        self.data = open_store(cfg.store, split, fields=inputs + labels, variant=0, batch_size=per_rank,
                               remainder="keep", rank=d.rank, world=d.world, y_hat_dtype=None)
        self.metric = METRIC[task]
        self.best: dict | None = None

    def due(self, epoch_done: int) -> bool:
        """Validate after `epoch_done` epochs: every --val-every epochs, and after the last."""
        return epoch_done % self.cfg.val_every == 0 or epoch_done == self.cfg.epochs

    @torch.no_grad()
    def run(self, model) -> dict:
        """{'val_top1': %, 'val_top5': %} or {'val_miou': %, 'val_pixel_accuracy': %}, equal on every rank."""
        from torch.utils.data import DataLoader

        from ..evaluate.run import predict_labels

        was_training = model.training
        model.eval()
        kind = self.d.device.type
        score = TopK((1, 5)) if self.task == "classification" else ConfusionMatrix(self.num_classes, IGNORE_INDEX)
        try:
            for batch in DataLoader(self.data, batch_size=None, num_workers=0):
                with autocast(kind, autocast_dtype(self.cfg.precision, kind)):
                    logits = model(*model_inputs(batch, self.inputs, self.region, self.d.device)).float()
                if self.task == "classification":
                    score.update(logits, batch["label"])
                else:
                    for i, meta in enumerate(batch["meta"]):
                        score.update(predict_labels(logits[i], meta, self.region), batch["label_map"][i])
        finally:
            model.train(was_training)
        score.all_reduce()
        if self.task == "classification":
            values = score.compute()
            return {"val_top1": values["top1"], "val_top5": values["top5"]}
        return {"val_miou": 100 * score.miou(), "val_pixel_accuracy": 100 * score.pixel_accuracy()}

    def improved(self, values: dict, step: int, epoch: int) -> bool:
        """Record `values` (from run()) after `epoch` epochs; True when they are the best so far."""
        value = values[f"val_{self.metric}"]
        if value is None or self.best is not None and value <= self.best["value"]:
            return False
        self.best = {"metric": self.metric, "value": float(value), "step": step, "epoch": epoch,
                     "split": self.split}
        return True
