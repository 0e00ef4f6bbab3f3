"""Compressed-domain models: one registry table and one ``create_model``.

    from latentstore.models import create_model
    m = create_model("resnet50-aa", latent_channels=128, num_classes=1000, pixel_weights="pretrained")
    logits, feats = m(y_hat, return_features=True)  # feats at strides 8, 16, 32 of the image

Names (``REGISTRY``; ``<timm>`` is any timm CNN whose family has an -aa rule):

    <timm>            the pixel model itself (teacher, Decode baseline's second half)
    <timm>-aa         architecture adaptation, docs/method.md §4
    decode+<timm>     the coder's g_s, then the pixel model (pass coder=)
    reshape+resnet50  zero-pad + pixel-shuffle ŷ to 3 channels, then ResNet-50
    cresnet51         Torfason et al. cResNet-51 on ŷ
    cresnet39         Deng & Karam style: model(y_hat, sigma_hat)
    pspnet50[-aa]     segmentation (19 Cityscapes classes by default)

``pixel_weights`` is "none", "pretrained" (timm's hub weights; needs internet
or a filled HF cache) or a path to a state_dict of the pixel model named in
the entry. They load into every layer that survives; a load that misses any
other layer is an error, and ``model.load_report`` says what was loaded.

This file imports nothing heavy: ``latentstore.models.names`` (the names as plain data) loads without
torch, and the names below load their module on first use.
"""
from typing import TYPE_CHECKING

from .names import model_names, name_listing

#: name -> submodule that defines it, imported on first access (torch, timm)
_LAZY = {"REGISTRY": "registry", "create_model": "registry", "resolve": "registry",
         "Tap": "taps", "CLASSIFICATION_STRIDES": "taps", "check_tap_shapes": "taps", "feature_shapes": "taps",
         "shapes_of": "taps", "TapClassifier": "adapt", "PSPNet": "pspnet"}

if TYPE_CHECKING:
    from .adapt import TapClassifier
    from .pspnet import PSPNet
    from .registry import REGISTRY, create_model, resolve
    from .taps import CLASSIFICATION_STRIDES, Tap, check_tap_shapes, feature_shapes, shapes_of


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["model_names", "name_listing", *_LAZY]
