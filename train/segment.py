"""Train a compressed-domain segmentation model (PSPNet-50-aa) on a latentstore store.

    torchrun --nproc_per_node 8 train/segment.py --store /stores/cs-cheng2020-q3 --model pspnet50-aa \
        --pixel-weights /weights/resnet50s.pth --transfer mse --epochs 80 --out runs/psp-q3

Recipe (docs/method.md §5, the defaults): SGD, momentum 0.9, lr 1e-3 → 1e-4 at epoch
40 of 80. Loss = cross-entropy on the stored label map (ignore 255) + 0.4 ×
the auxiliary head's + β · Σ_taps d(student map, stored teacher map).
Logits come out at the crop's resolution (16× the latent), as the labels are stored.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from latentstore.train import TrainConfig, opt, parse_config, run_script

IGNORE = 255


@dataclass(frozen=True)
class Config(TrainConfig):
    """Train a segmentation model on stored latents and label maps (flags: any TrainConfig field)."""
    model: str = opt("pspnet50-aa", "a segmentation model of latentstore.models")
    epochs: int = opt(80, "epochs; epoch e reads stored variant e mod K")
    batch_size: int = opt(8, "GLOBAL batch size (split evenly over ranks)")
    lr: float = opt(1e-3, "initial learning rate")
    aux_weight: float = opt(0.4, "weight of the auxiliary head's loss (PSPNet)")


def recipe_milestones(epochs: int) -> tuple:
    """lr 1e-3 → 1e-4 half-way (epoch 40 of 80, docs/method.md §5)."""
    return (max(1, epochs // 2),)


def seg_loss(logits, aux, label, aux_weight: float):
    """Cross-entropy (ignore 255) of the main and auxiliary logits, resized to the label map if they differ."""
    import torch.nn.functional as F

    if logits.shape[-2:] != label.shape[-2:]:
        logits = F.interpolate(logits, label.shape[-2:], mode="bilinear", align_corners=False)
        aux = F.interpolate(aux, label.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, label, ignore_index=IGNORE) + aux_weight * F.cross_entropy(
        aux, label, ignore_index=IGNORE)


def main(argv=None):
    cfg = parse_config(Config, argv)   # before torch is imported: --help and flag errors come at once
    import torch.nn.functional as F

    from latentstore.train import cleanup, fit, prepare_student, setup

    d = setup(cfg.device)
    try:
        student = prepare_student(cfg, task="segmentation")   # refuses a mismatched teacher
        model, transfer = student.model, student.transfer

        def loss_fn(net, batch):
            x = student.batch_inputs(batch, d.device)
            label = batch["label_map"].to(d.device, non_blocking=True).long()
            out = net(*x, return_aux=True, return_features=transfer.kind != "none")
            seg = seg_loss(out[0], out[1], label, cfg.aux_weight)
            if transfer.kind == "none":
                return seg, {"seg": seg.detach()}
            kt = transfer(out[2], batch)
            return seg + cfg.beta * kt, {"seg": seg.detach(), "transfer": kt.detach()}

        fit(cfg, d, model, loss_fn, fields=student.inputs + ("label_map",) + transfer.fields,
            milestones=cfg.milestones or recipe_milestones(cfg.epochs), task="segmentation", student=student)
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(run_script(main))
