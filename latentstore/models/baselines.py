"""The paper's baselines (docs/method.md §4): cResNet-51/39, Reshape + ResNet-50, Decode + model.

cResNet (Torfason et al. 2018, our reading; docs/models.md has the details):
ResNet-50 with the root block (7×7 conv + max-pool) and conv2_x removed,
conv3_x fed the latent directly, and conv4_x deepened to keep the capacity.
cResNet-51 = Bottleneck blocks [conv3_x 4, conv4_x 10, conv5_x 3] (17 blocks ×
3 convs = 51 layers); cResNet-39 = [4, 6, 3]. Torfason's latent has stride 8,
so there conv3_x ran at its native resolution. ŷ here has stride 16 (14×14
from 224×224); conv3_x and conv4_x run at 14×14 with stride 1 and conv5_x
downsamples to 7×7 - the only layout that gives the paper's 29.8M / 3.3B.
"""
from __future__ import annotations

import torch
from timm.models.resnet import Bottleneck
from torch import nn

from ..errors import ConfigError
from .adapt import TapClassifier
from .taps import Tap, capture


def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    out = planes * Bottleneck.expansion
    downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
    layers = [Bottleneck(inplanes, planes, stride=stride, downsample=downsample)]
    layers += [Bottleneck(out, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class CResNet(nn.Module):
    """cResNet on ŷ. Module names follow timm's ResNet (layer2..4, fc) so
    ResNet-50 weights load by name where the shapes agree."""

    def __init__(self, in_channels: int, num_classes: int, blocks=(4, 10, 3)):
        super().__init__()
        self.layer2 = _stage(in_channels, 128, blocks[0], stride=1)
        self.layer3 = _stage(512, 256, blocks[1], stride=1)
        self.layer4 = _stage(1024, 512, blocks[2], stride=2)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each block, as timm does
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def forward_features(self, x):
        return self.layer4(self.layer3(self.layer2(x)))

    def forward(self, x):
        return self.fc(torch.flatten(self.global_pool(self.forward_features(x)), 1))


# conv3_x ends at stride 16 here, so there is no stride-8 tap (see check_tap_shapes).
CRESNET_TAPS = [Tap("layer3", 1024, 16), Tap("layer4", 2048, 32)]


def cresnet(latent_channels: int, num_classes: int, depth: int = 51) -> TapClassifier:
    blocks = {51: (4, 10, 3), 39: (4, 6, 3)}[depth]
    return TapClassifier(CResNet(latent_channels, num_classes, blocks), CRESNET_TAPS,
                         input_stride=16, input_names=("y_hat",))


class TwoInputCResNet(nn.Module):
    """Deng & Karam style: ŷ and σ̂ (the hyperprior's scales) as two inputs.

    Our reading: each input gets its own 3×3 conv + BN + ReLU (C → C), the two
    maps are concatenated (2C) and fed to a cResNet-39 body. σ̂ carries the
    coder's local uncertainty, which ŷ alone does not; a separate stem per
    input lets the network scale the two very different value ranges.
    """

    input_names = ("y_hat", "sigma_hat")

    def __init__(self, latent_channels: int, num_classes: int, blocks=(4, 6, 3)):
        super().__init__()
        c = latent_channels

        def stem():
            return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))

        self.stem_y, self.stem_sigma = stem(), stem()
        self.body = CResNet(2 * c, num_classes, blocks)
        self.taps = [Tap(f"body.{t.name}", t.channels, t.reduction) for t in CRESNET_TAPS]
        self.input_stride = 16

    def forward(self, y_hat, sigma_hat=None, return_features: bool = False):
        if sigma_hat is None:
            raise ConfigError("cresnet39 takes two inputs, model(y_hat, sigma_hat): "
                              "build the store with σ̂ (the hyperprior scales) to use it")
        if sigma_hat.shape != y_hat.shape:
            raise ConfigError(f"sigma_hat shape {tuple(sigma_hat.shape)} differs from y_hat {tuple(y_hat.shape)}")
        x = torch.cat([self.stem_y(y_hat), self.stem_sigma(sigma_hat)], dim=1)
        if not return_features:
            return self.body(x)
        with capture(self, [t.name for t in self.taps]) as out:
            logits = self.body(x)
        return logits, [out[t.name] for t in self.taps]


class ReshapeInput(nn.Module):
    """Zero-pad ŷ's channels to 3·r² (r a multiple of 4, so a multiple of 48) and pixel-shuffle by r to 3 channels.

    C=128 and C=192 both give r=8 (pad to 192): 14×14 ŷ → 3×112×112. r is the
    smallest multiple of 4 with 3·r² ≥ C, so no latent channel is dropped.
    """

    def __init__(self, latent_channels: int):
        super().__init__()
        r = 4
        while 3 * r * r < latent_channels:
            r += 4
        self.r, self.pad = r, 3 * r * r - latent_channels
        self.shuffle = nn.PixelShuffle(r)

    def forward(self, y_hat):
        if self.pad:
            y_hat = nn.functional.pad(y_hat, (0, 0, 0, 0, 0, self.pad))
        return self.shuffle(y_hat)


def reshape_classifier(pixel: TapClassifier, latent_channels: int) -> TapClassifier:
    """Reshape + <pixel model>. The pixel net sees a 16/r-stride image, so tap strides scale by 16/r."""
    reshape = ReshapeInput(latent_channels)
    scale = 16 // reshape.r
    net = nn.Sequential()
    net.add_module("reshape", reshape)
    net.add_module("pixel", pixel.net)
    taps = [Tap(f"pixel.{t.name}", t.channels, t.reduction * scale) for t in pixel.taps]
    return TapClassifier(net, taps, input_stride=16, input_names=("y_hat",))


class Decode(nn.Module):
    """The coder's synthesis transform g_s, frozen, then the pixel model's input normalization.

    g_s is CompressAI's (kept in eval mode and without gradients: the baseline
    trains only the pixel model on decoded images). Its output is clamped to
    [0, 1] as ``decompress()`` does before normalization.
    """

    def __init__(self, g_s: nn.Module, mean, std):
        super().__init__()
        self.g_s = g_s
        self.g_s.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.g_s.eval()
        return self

    def forward(self, y_hat):
        with torch.no_grad():
            x = self.g_s(y_hat).clamp_(0, 1)
        return (x - self.mean) / self.std


def decode_classifier(pixel: TapClassifier, coder: nn.Module) -> TapClassifier:
    """Decode + <pixel model>: taps keep the pixel model's strides (g_s restores full resolution)."""
    if coder is None or not hasattr(coder, "g_s"):
        raise ConfigError("decode+<model> needs coder=<CompressAI model> (latentstore.coders.registry.load_coder(...).model); "
                          "the store manifest names the coder, quality and weights")
    cfg = getattr(pixel.net, "pretrained_cfg", {}) or {}
    net = nn.Sequential()
    net.add_module("decode", Decode(coder.g_s, cfg.get("mean", (0.485, 0.456, 0.406)),
                                    cfg.get("std", (0.229, 0.224, 0.225))))
    net.add_module("pixel", pixel.net)
    taps = [Tap(f"pixel.{t.name}", t.channels, t.reduction) for t in pixel.taps]
    return TapClassifier(net, taps, input_stride=16, input_names=("y_hat",))
