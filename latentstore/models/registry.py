"""The model registry: one table of names -> builders (``REGISTRY``), ``resolve`` and ``create_model``."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import ConfigError, WeightsError
from .adapt import load_into, read_state_dict, timm_classifier
from .baselines import TwoInputCResNet, cresnet, decode_classifier, reshape_classifier
from .names import NAMES, model_names
from .pspnet import BACKBONE, PSPNet

__all__ = ["REGISTRY", "ModelEntry", "create_model", "resolve"]


@dataclass(frozen=True)
class ModelEntry:
    pattern: str          # name, "{timm}" stands for a timm model name
    task: str             # "classification" | "segmentation"
    inputs: tuple         # ("image",), ("y_hat",) or ("y_hat", "sigma_hat")
    build: Callable       # (timm_name, latent_channels, num_classes, coder, **kw) -> nn.Module
    pixel_source: Callable  # timm_name -> timm name whose weights pixel_weights refers to
    weights_target: Callable  # model -> (submodule, allowed_missing, allowed_unexpected); "*" = any
    description: str


def _stem_prefix(net) -> str:
    return net.aa_edits["stem"] + "."


def _entry(pattern: str, inputs: tuple, build, pixel_source, weights_target) -> ModelEntry:
    """A registry entry; its task and description come from the light name table (model_names.NAMES)."""
    task, description = NAMES[pattern]
    return ModelEntry(pattern, task, inputs, build, pixel_source, weights_target, description)


REGISTRY = [
    _entry("pspnet50", ("image",),
           lambda t, c, n, coder, **kw: PSPNet(n, None),
           lambda t: BACKBONE, lambda m: (m.backbone, (), ("fc.",))),
    _entry("pspnet50-aa", ("y_hat",),
           lambda t, c, n, coder, **kw: PSPNet(n, c),
           lambda t: BACKBONE,
           lambda m: (m.backbone, (_stem_prefix(m.backbone),), ("fc.", _stem_prefix(m.backbone)))),
    _entry("cresnet51", ("y_hat",),
           lambda t, c, n, coder, **kw: cresnet(c, n, 51),
           lambda t: "resnet50", lambda m: (m.net, "*", "*")),
    _entry("cresnet39", ("y_hat", "sigma_hat"),
           lambda t, c, n, coder, **kw: TwoInputCResNet(c, n),
           lambda t: "resnet50", lambda m: (m.body, "*", "*")),
    _entry("reshape+resnet50", ("y_hat",),
           lambda t, c, n, coder, **kw: reshape_classifier(timm_classifier("resnet50", n, **kw), c),
           lambda t: "resnet50", lambda m: (m.net.pixel, (), ())),
    _entry("decode+{timm}", ("y_hat",),
           lambda t, c, n, coder, **kw: decode_classifier(timm_classifier(t, n, **kw), coder),
           lambda t: t, lambda m: (m.net.pixel, (), ())),
    _entry("{timm}-aa", ("y_hat",),
           lambda t, c, n, coder, **kw: timm_classifier(t, n, latent_channels=c, **kw),
           lambda t: t,
           lambda m: (m.net, (_stem_prefix(m.net),), (_stem_prefix(m.net),))),
    _entry("{timm}", ("image",),
           lambda t, c, n, coder, **kw: timm_classifier(t, n, **kw),
           lambda t: t, lambda m: (m.net, (), ())),
]



def _is_timm_cnn(name: str) -> bool:
    import timm

    return bool(name) and timm.is_model(name)


def resolve(name: str) -> tuple[ModelEntry, str | None]:
    """(registry entry, timm name or None) for ``name``; ConfigError listing valid names otherwise."""
    for entry in REGISTRY:
        if "{timm}" not in entry.pattern:
            if name == entry.pattern:
                return entry, None
            continue
        regex = "^" + re.escape(entry.pattern).replace(r"\{timm\}", "(?P<timm>.+?)") + "$"
        match = re.match(regex, name)
        if match and _is_timm_cnn(match["timm"]):
            return entry, match["timm"]
    raise ConfigError(f"Unknown model {name!r}: valid names are {', '.join(model_names())} "
                      "where {timm} is any timm CNN name (timm.list_models())")


def create_model(name: str, latent_channels: int | None, num_classes: int,
                 pixel_weights: str = "none", coder: nn.Module | None = None, **kw) -> nn.Module:
    """Build model ``name`` for ŷ with ``latent_channels`` channels (from the store manifest).

    ``coder`` (a CompressAI model) is needed by decode+<timm> only. Extra ``kw``
    go to ``timm.create_model`` (e.g. drop_rate, drop_path_rate).
    """
    entry, timm_name = resolve(name)
    if "y_hat" in entry.inputs and not (isinstance(latent_channels, int) and latent_channels > 0):
        raise ConfigError(f"{name} runs on ŷ: pass latent_channels (C from the store manifest), "
                          f"got {latent_channels!r}")
    model = entry.build(timm_name, latent_channels, num_classes, coder, **kw)
    model.registry_name = name
    model.task = entry.task
    model.load_report = None
    if pixel_weights != "none":
        source = entry.pixel_source(timm_name)
        state = _pixel_state_dict(source, pixel_weights, num_classes)
        target, allowed_missing, allowed_unexpected = entry.weights_target(model)
        # A checkpoint for another number of classes keeps everything but the classifier.
        classifier = _classifier_prefixes(target)
        model.load_report = load_into(target, state, allowed_missing, allowed_unexpected,
                                      allow_mismatch="*" if allowed_missing == "*" else classifier)
    return model


def _classifier_prefixes(net) -> tuple:
    cfg = getattr(net, "pretrained_cfg", None) or {}
    head = cfg.get("classifier", ())
    return tuple(f"{h}." for h in ((head,) if isinstance(head, str) else head))


def _pixel_state_dict(timm_name: str, pixel_weights: str, num_classes: int) -> dict:
    if pixel_weights != "pretrained":
        return read_state_dict(pixel_weights)
    import timm

    try:
        # timm drops/adapts the classifier itself when num_classes differs.
        return timm.create_model(timm_name, pretrained=True).state_dict()
    except Exception as exc:  # offline: huggingface_hub / urllib raise many types
        raise WeightsError(
            f"Could not fetch timm's pretrained {timm_name} weights ({type(exc).__name__}: {exc}). "
            "Offline? Fill the Hugging Face cache on a machine with internet and set HF_HUB_OFFLINE=1, "
            f"or save the weights there (torch.save(timm.create_model({timm_name!r}, pretrained=True)"
            ".state_dict(), 'w.pth')) and pass pixel_weights='w.pth'") from exc
