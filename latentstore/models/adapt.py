"""Architecture adaptation ("-aa", docs/method.md §4) for timm CNNs, and the classifier wrapper.

A pixel CNN sees a 224×224 image; ŷ is C×14×14 (stride 16). The adaptation
takes away the network's first two 2× downsamplings and puts a 4× sub-pixel
upsampling where the stem conv was, so every later layer runs at exactly the
resolution (and with exactly the weights) it had in the pixel model:

1. the stem's first conv is replaced by ``SubPixelStem``: 3×3 conv C→c·16,
   PixelShuffle(4), giving the c channels that conv produced;
2. of the first two stride-2 operations, the stem conv is gone with step 1 if
   it was one; any other is set to stride 1 (conv) or removed (pooling).

Which conv is "the stem" and where to look for the downsamplings differs per
family, and is the only per-family knowledge here (``AA_RULES``). The
downsamplings themselves are found by walking the modules in registration
order (timm registers CNN layers in execution order) and picking the first
stride-2 convs/pools after the stem. :func:`adapt` then probes the result and
refuses a network whose strides did not come out right.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, WeightsError
from .taps import CLASSIFICATION_STRIDES, Tap, capture, taps_by_stride

UPSCALE = 4  # ŷ has stride 16; after two removed 2× downsamplings the net expects stride 4.


class SubPixelStem(nn.Module):
    """3×3 conv C → c·16 and PixelShuffle(4): ŷ (C×h×w) → c×4h×4w."""

    def __init__(self, in_channels: int, out_channels: int, upscale: int = UPSCALE):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * upscale ** 2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(upscale)

    def forward(self, x):
        return self.shuffle(self.conv(x))


@dataclass(frozen=True)
class AaRule:
    """Where the -aa edits go in one timm family.

    stem:  module path of the stem; its first Conv2d is the one replaced
           (ResNet "conv1" is a conv, or a Sequential for deep stems "c/d/s").
    scope: module path under which the other downsampling(s) are searched
           ("" = the whole model), in registration order.
    """
    stem: str
    scope: str = ""


# timm class name -> rule. Add a family here after checking its module order.
AA_RULES = {
    "ResNet": AaRule(stem="conv1", scope=""),          # 2nd downsampling: maxpool
    "VGG": AaRule(stem="features.0", scope="features"),  # conv1 is stride 1: first two max-pools
    "EfficientNet": AaRule(stem="conv_stem", scope="blocks"),  # first stride-2 block's conv_dw
    "MobileNetV3": AaRule(stem="conv_stem", scope="blocks"),
    "RegNet": AaRule(stem="stem", scope="s1"),
}


def _first_conv(module: nn.Module, path: str) -> tuple[str, nn.Conv2d]:
    if isinstance(module, nn.Conv2d):
        return path, module
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d):
            return f"{path}.{name}", sub
    raise ConfigError(f"No Conv2d under {path!r}")


def _stride(m: nn.Module) -> int:
    s = getattr(m, "stride", 1)
    return s[0] if isinstance(s, (tuple, list)) else int(s)


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def adapt(net: nn.Module, latent_channels: int) -> dict:
    """Apply the -aa edits to timm CNN ``net`` in place. Returns what was edited.

    Raises ConfigError for a family without a rule, listing the supported ones.
    """
    family = type(net).__name__
    if family not in AA_RULES:
        raise ConfigError(
            f"No -aa rule for timm family {family}: supported families are {', '.join(sorted(AA_RULES))}. "
            "Add an AaRule to latentstore.models.adapt.AA_RULES")
    rule = AA_RULES[family]
    stem_path, stem = _first_conv(net.get_submodule(rule.stem), rule.stem)
    remaining = 2 - (1 if _stride(stem) == 2 else 0)

    edits = {"stem": stem_path, "destrided": [], "removed": []}
    scope = net.get_submodule(rule.scope) if rule.scope else net
    prefix = f"{rule.scope}." if rule.scope else ""
    for name, m in list(scope.named_modules()):
        if remaining == 0:
            break
        path = prefix + name
        if m is stem or not name or _stride(m) != 2:
            continue
        if isinstance(m, nn.Conv2d):
            m.stride = (1, 1)  # padding "k//2" (or timm's dynamic SAME) is right for stride 1 too
            edits["destrided"].append(path)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            _set_module(net, path, nn.Identity())
            edits["removed"].append(path)
        else:
            continue
        remaining -= 1
    if remaining:
        raise ConfigError(f"{family}: found fewer than two downsamplings to remove under {rule.scope!r}")

    _set_module(net, stem_path, SubPixelStem(latent_channels, stem.out_channels))
    return edits


class TapClassifier(nn.Module):
    """A timm classifier that also returns its feature maps at given strides.

    ``input_stride`` is the stride of the input w.r.t. the original image (1 for
    pixels, 16 for ŷ); tap reductions are always w.r.t. the original image.
    """

    def __init__(self, net: nn.Module, taps: list[Tap], input_stride: int = 1,
                 input_names: tuple = ("image",)):
        super().__init__()
        self.net = net
        self.taps = list(taps)
        self.input_stride = input_stride
        self.input_names = input_names

    def forward(self, x, return_features: bool = False):
        if not return_features:
            return self.net(x)
        with capture(self.net, [t.name for t in self.taps]) as out:
            logits = self.net(x)
        return logits, [out[t.name] for t in self.taps]


def timm_classifier(name: str, num_classes: int, latent_channels: int | None = None,
                    strides=CLASSIFICATION_STRIDES, **kw) -> TapClassifier:
    """``timm.create_model(name)``, -aa adapted when ``latent_channels`` is given."""
    import timm

    try:
        net = timm.create_model(name, pretrained=False, num_classes=num_classes, **kw)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise ConfigError(f"timm has no model {name!r} ({exc}); see timm.list_models()") from exc
    taps = taps_by_stride(net.feature_info, strides)
    if latent_channels is None:
        return TapClassifier(net, taps, input_stride=1)
    net.aa_edits = adapt(net, latent_channels)  # plain attribute: kept for repr/debugging only
    model = TapClassifier(net, taps, input_stride=16, input_names=("y_hat",))
    _check_strides(model, latent_channels, name)
    return model


@torch.no_grad()
def _check_strides(model: TapClassifier, latent_channels: int, name: str) -> None:
    """Probe a 4×4 ŷ: each tap must come out at (4·16/reduction)², else the edits went wrong."""
    size = 4
    probe = torch.zeros(1, latent_channels, size, size)
    model.eval()
    try:
        _, feats = model(probe, return_features=True)
    except RuntimeError as exc:
        raise ConfigError(f"{name}-aa does not run on a {size}×{size} latent: {exc}") from exc
    finally:
        model.train()
    for tap, f in zip(model.taps, feats):
        want = size * 16 // tap.reduction
        if tuple(f.shape[-2:]) != (want, want) or f.shape[1] != tap.channels:
            raise ConfigError(
                f"{name}-aa: tap {tap.name} has shape {tuple(f.shape[1:])}, expected "
                f"({tap.channels}, {want}, {want}); the AA_RULES entry for {type(model.net).__name__} is wrong")


# ---------------------------------------------------------------- pixel weights

@dataclass
class LoadReport:
    """What a pixel checkpoint did to a compressed-domain model."""
    loaded: list
    missing: list       # in the model, not in the checkpoint (the new stem)
    unexpected: list    # in the checkpoint, not in the model (the replaced stem)
    mismatched: list    # same name, other shape (e.g. a classifier for other classes)

    def summary(self) -> str:
        return (f"loaded {len(self.loaded)} tensors; missing {self.missing}; "
                f"unexpected {self.unexpected}; shape-mismatched {self.mismatched}")


def read_state_dict(path) -> dict:
    """A state_dict from a file: a bare one, or under "state_dict"/"model" (training checkpoints)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise WeightsError(f"pixel_weights file {path} does not exist: pass 'none', 'pretrained' or a path") from exc
    except Exception as exc:
        raise WeightsError(f"Could not read pixel weights {path}: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_into(module: nn.Module, state: dict, allowed_missing=(), allowed_unexpected=(),
              allow_mismatch=()) -> LoadReport:
    """Copy every tensor of ``state`` whose name and shape match into ``module``.

    The ``allowed_*`` arguments are name prefixes. Anything missing, unexpected
    or shape-mismatched outside them is a WeightsError: a silent partial load is
    the classic way to train from scratch by accident.
    """
    own = module.state_dict()
    loaded, mismatched = [], []
    for k, v in state.items():
        if k in own and own[k].shape == v.shape:
            loaded.append(k)
        elif k in own:
            mismatched.append(k)
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    report = LoadReport(loaded, missing, unexpected, mismatched)

    def outside(keys, prefixes):
        return [k for k in keys if not k.startswith(tuple(prefixes))] if prefixes != "*" else []

    bad = (outside(missing, allowed_missing) + outside(unexpected, allowed_unexpected)
           + outside(mismatched, allow_mismatch))
    if bad:
        raise WeightsError(f"Pixel weights do not fit {type(module).__name__}: {report.summary()}")
    module.load_state_dict({k: state[k] for k in loaded}, strict=False)
    return report
