"""Train a compressed-domain classifier on a latentstore store, optionally with knowledge transfer.

    torchrun --nproc_per_node 8 train/classify.py --store /stores/in1k-cheng2020-q3 --model resnet50-aa \
        --pixel-weights pretrained --transfer mse --beta 1.0 --epochs 16 --batch-size 256 --out runs/r50aa-q3

Recipe (docs/method.md §5, the defaults): SGD, momentum 0.9, lr 0.01, ×0.1 at 3/4 of
the epochs and again at the last epoch; global batch 256. Loss = cross-entropy
+ β · Σ_taps d(student map, stored teacher map). Epoch e reads stored variant
e mod K. Rerunning the same command resumes from OUT/last.pt.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from latentstore.train import TrainConfig, opt, parse_config, run_script


@dataclass(frozen=True)
class Config(TrainConfig):
    """Train a classifier on stored latents (flags: any TrainConfig field)."""
    label_smoothing: float = opt(0.0, "cross-entropy label smoothing")


def recipe_milestones(epochs: int) -> tuple:
    """lr ×0.1 at 3/4 of the epochs and at the last epoch (docs/method.md §5)."""
    return tuple(sorted({max(1, 3 * epochs // 4), max(1, epochs - 1)}))


def main(argv=None):
    cfg = parse_config(Config, argv)   # before torch is imported: --help and flag errors come at once
    import torch.nn.functional as F

    from latentstore.train import cleanup, fit, prepare_student, setup

    d = setup(cfg.device)
    try:
        student = prepare_student(cfg, task="classification")   # refuses a mismatched teacher
        model, transfer = student.model, student.transfer

        def loss_fn(net, batch):
            x = student.batch_inputs(batch, d.device)
            label = batch["label"].to(d.device, non_blocking=True)
            if transfer.kind == "none":
                ce = F.cross_entropy(net(*x), label, label_smoothing=cfg.label_smoothing)
                return ce, {"ce": ce.detach()}
            logits, feats = net(*x, return_features=True)
            ce = F.cross_entropy(logits, label, label_smoothing=cfg.label_smoothing)
            kt = transfer(feats, batch)
            return ce + cfg.beta * kt, {"ce": ce.detach(), "transfer": kt.detach()}

        fit(cfg, d, model, loss_fn, fields=student.inputs + ("label",) + transfer.fields,
            milestones=cfg.milestones or recipe_milestones(cfg.epochs), task="classification", student=student)
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(run_script(main))
