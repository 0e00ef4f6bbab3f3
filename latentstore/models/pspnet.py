"""PSPNet-50 and PSPNet-50-aa for semantic segmentation (Zhao et al. 2017; docs/method.md §4).

Backbone: timm ``resnet50s`` - ResNet-50 with the "deep base" stem of the
reference PSPNet code (three 3×3 convs 3→64→64→128) - built with
``output_stride=8`` (layer3 dilation 2, layer4 dilation 4). The deep stem is
what reproduces the paper's counts (49.1M params; the -aa variant's 282B MACs at
640×640 only come out if the stem's 2nd and 3rd convs survive and run at
stride 4, see docs/models.md). Head: pyramid pooling (bins 1, 2, 3, 6; 1×1
conv 2048→512 each), concat (4096) → 3×3 conv 512 → dropout → 1×1 classifier;
auxiliary head on layer3 (3×3 conv 1024→256 → classifier), used in training.

The -aa variant applies :func:`latentstore.models.adapt.adapt` to the
backbone: the stem's first conv becomes the sub-pixel conv and the max-pool
goes, so ŷ C×40×40 (a 640×640 crop) gives layer1 at 160×160, as pixels do.
"""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .adapt import adapt
from .taps import Tap, capture

BACKBONE = "resnet50s"


class PPM(nn.Module):
    """Pyramid pooling: adaptive average pool to each bin size, 1×1 conv, upsample, concat with the input."""

    def __init__(self, in_channels: int = 2048, reduction: int = 512, bins=(1, 2, 3, 6)):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, reduction, 1, bias=False),
                          nn.BatchNorm2d(reduction), nn.ReLU(inplace=True))
            for b in bins)

    def forward(self, x):
        size = x.shape[-2:]
        return torch.cat([x] + [F.interpolate(s(x), size, mode="bilinear", align_corners=True)
                                for s in self.stages], dim=1)


def _head(in_channels: int, mid: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid),
                         nn.ReLU(inplace=True), nn.Dropout2d(0.1), nn.Conv2d(mid, num_classes, 1))


class PSPNet(nn.Module):
    """PSPNet on pixels (``latent_channels=None``) or on ŷ (-aa).

    ``forward(x)`` returns logits at the ORIGINAL image size (16× the latent
    for -aa). ``return_aux=True`` adds the auxiliary logits; ``return_features``
    adds a dict of the named taps (``self.taps``). Order: (logits, [aux], [feats]).
    """

    tap_names = ("layer1", "layer2", "layer3", "layer4", "head")

    def __init__(self, num_classes: int = 19, latent_channels: int | None = None):
        super().__init__()
        self.backbone = timm.create_model(BACKBONE, pretrained=False, output_stride=8, num_classes=0,
                                          global_pool="")
        self.aa_edits = adapt(self.backbone, latent_channels) if latent_channels else None
        self.input_stride = 16 if latent_channels else 1
        self.input_names = ("y_hat",) if latent_channels else ("image",)
        self.ppm = PPM(2048, 512)
        self.head = _head(4096, 512, num_classes)
        self.aux_head = _head(1024, 256, num_classes)
        chans = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048, "head": 512}
        strides = {"layer1": 4, "layer2": 8, "layer3": 8, "layer4": 8, "head": 8}
        self.taps = [Tap(n, chans[n], strides[n]) for n in self.tap_names]

    def forward(self, x, return_features: bool = False, return_aux: bool = False):
        size = (x.shape[-2] * self.input_stride, x.shape[-1] * self.input_stride)
        # "head" taps the 512-channel map before the classifier (head.2 = its ReLU).
        names = {t.name: ("backbone." + t.name if t.name != "head" else "head.2") for t in self.taps}
        with capture(self, list(names.values()) if return_features else []) as out:
            b = self.backbone
            f = b.maxpool(b.act1(b.bn1(b.conv1(x))))
            f = b.layer2(b.layer1(f))
            f3 = b.layer3(f)
            f4 = b.layer4(f3)
            logits = F.interpolate(self.head(self.ppm(f4)), size, mode="bilinear", align_corners=True)
            aux = (F.interpolate(self.aux_head(f3), size, mode="bilinear", align_corners=True)
                   if return_aux else None)
        if not (return_aux or return_features):
            return logits
        result = (logits,)
        if return_aux:
            result += (aux,)
        if return_features:
            result += ({t.name: out[names[t.name]] for t in self.taps},)
        return result
