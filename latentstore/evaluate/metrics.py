"""Exact evaluation metrics: top-k counts and an int64 confusion matrix, reducible across processes.

Everything accumulated here is an integer count (int64 tensors), never a
running float mean: the same predictions give the same numbers whatever the
batch size, the order of batches or the number of processes, and a 2-process
evaluation reduces (sums) to exactly the single-process counts. Ratios (top-1,
IoU) are only formed at the end, from the reduced counts.

    acc = TopK((1, 5))
    for logits, target in batches:
        acc.update(logits, target)
    acc.all_reduce()                       # no-op outside torch.distributed
    acc.compute()                          # {"top1": 76.1, "top5": 92.9, "samples": 50000}

    cm = ConfusionMatrix(19, ignore_index=255)
    cm.update(logits.argmax(1), label_map)
    cm.all_reduce()
    cm.iou()                               # per-class IoU, NaN for a class absent from labels and predictions
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import StoreError

IGNORE_INDEX = 255


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum an integer tensor over all processes of the default group, in place; a no-op without one.

    NCCL only reduces CUDA tensors, so under nccl the tensor travels through the
    current CUDA device and comes back; gloo reduces CPU int64 directly.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    if dist.get_backend() == "nccl":
        moved = t.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        t.copy_(moved.cpu())
    else:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> torch.Tensor:
    """int64 counts of samples whose target is among the k highest logits, one per k.

    A k larger than the number of classes counts every sample (the target is
    always among "the top k"), as torchvision's reference scripts would if they
    did not crash; the eval record notes the number of classes so this is visible.
    Ties: ``torch.topk`` picks, deterministically on one device.
    """
    if logits.ndim != 2 or target.ndim != 1 or logits.shape[0] != target.shape[0]:
        raise ValueError(f"expected logits [N, classes] and targets [N], got {list(logits.shape)} "
                         f"and {list(target.shape)}")
    n_classes = logits.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= n_classes):
        raise StoreError(f"class labels outside 0..{n_classes - 1} (found {int(target.min())}.."
                         f"{int(target.max())}): the store's labels do not fit the model's {n_classes} classes")
    kmax = min(max(ks), n_classes)
    top = logits.topk(kmax, dim=1).indices                     # [N, kmax]
    hit = top.eq(target.view(-1, 1))
    return torch.tensor([int(hit[:, :min(k, n_classes)].any(1).sum()) for k in ks], dtype=torch.int64)


class TopK:
    """Top-k accuracy from exact integer counts (correct per k, and samples seen)."""

    def __init__(self, ks=(1, 5)):
        self.ks = tuple(ks)
        self.counts = torch.zeros(len(self.ks) + 1, dtype=torch.int64)  # [correct@k..., samples]

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.counts[:-1] += topk_correct(logits.detach().float().cpu(), target.cpu(), self.ks)
        self.counts[-1] += target.shape[0]

    def all_reduce(self) -> "TopK":
        all_reduce_sum(self.counts)
        return self

    @property
    def samples(self) -> int:
        return int(self.counts[-1])

    def correct(self) -> dict:
        return {f"top{k}": int(c) for k, c in zip(self.ks, self.counts[:-1])}

    def compute(self) -> dict:
        """{"top1": percent, ..., "samples": N}; percentages are None when nothing was seen."""
        n = self.samples
        out = {name: (100.0 * c / n if n else None) for name, c in self.correct().items()}
        out["samples"] = n
        return out


class ConfusionMatrix:
    """cm[t, p] = number of pixels of true class t predicted as p (int64, exact).

    Pixels whose label is ``ignore_index`` are skipped. Any other label outside
    0..num_classes-1 is an error, not silently dropped: it means the label maps
    are not train ids (e.g. raw Cityscapes labelIds) and the mIoU would be wrong.
    """

    def __init__(self, num_classes: int = 19, ignore_index: int = IGNORE_INDEX):
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: ``pred`` and ``target`` integer class maps of the same shape (any dims)."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {list(pred.shape)} and label {list(target.shape)} differ in shape: "
                             "upsample predictions to the label resolution first")
        pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        c = self.num_classes
        if target.numel():
            bad = (target < 0) | (target >= c)
            if bad.any():
                values = sorted(set(target[bad].tolist()))[:10]
                raise StoreError(f"label values {values} are neither classes 0..{c - 1} nor ignore "
                                 f"{self.ignore_index}: are the label maps train ids?")
            if int(pred.min()) < 0 or int(pred.max()) >= c:
                raise ValueError(f"predicted classes outside 0..{c - 1}")
        # One bincount over t*C+p: exact integer counting, no float accumulation anywhere.
        self.matrix += torch.bincount(target * c + pred, minlength=c * c).view(c, c)

    def all_reduce(self) -> "ConfusionMatrix":
        all_reduce_sum(self.matrix)
        return self

    def iou(self) -> np.ndarray:
        """Per-class IoU = TP / (TP + FP + FN), float64; NaN where the union is empty."""
        cm = self.matrix.numpy().astype(np.float64)
        tp = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over classes with a non-empty union (the Cityscapes/mmseg convention), as a fraction."""
        iou = self.iou()
        return float(np.nanmean(iou)) if not np.all(np.isnan(iou)) else math.nan

    def pixel_accuracy(self) -> float:
        total = int(self.matrix.sum())
        return int(self.matrix.diag().sum()) / total if total else math.nan

    @property
    def pixels(self) -> int:
        return int(self.matrix.sum())
