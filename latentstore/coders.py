"""One table of CompressAI coders and one way to load them.

The table mirrors ``compressai.zoo.image.cfgs`` but is keyed by what users type
and says what the store needs to know: the zoo function, the valid qualities,
the latent channel count per quality, and whether the coder is autoregressive
(its ŷ is ``round(y - μ) + μ`` decoded serially, see docs/FORMAT.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from compressai import zoo
from compressai.models import (
    Cheng2020Anchor,
    Cheng2020Attention,
    FactorizedPrior,
    JointAutoregressiveHierarchicalPriors,
    MeanScaleHyperprior,
    ScaleHyperprior,
)
from compressai.zoo.image import model_urls
from compressai.zoo.pretrained import load_pretrained

from .coder_names import ALIASES, canonical_coder, check_coder_quality
from .errors import ConfigError, WeightsError
from .format import file_sha256
from .weights import fetch, load_state, recipe_sha256, state_dict_sha256


@dataclass(frozen=True)
class CoderSpec:
    name: str               # compressai.zoo name, e.g. "cheng2020-anchor"
    model_class: type       # the exact class the zoo builds (checked with `type(m) is`)
    channels: dict          # quality -> latent channels M of y
    # How ŷ relates to the coded symbols (docs/method.md §2):
    #   "round":   ŷ = round(y), symbols = round(y) (after the EntropyBottleneck's medians)
    #   "mean":    ŷ = round(y - μ) + μ, μ from the hyperprior
    #   "context": as "mean", μ also from the causal context of decoded ŷ (serial)
    latent_kind: str

    @property
    def qualities(self) -> tuple:
        return tuple(sorted(self.channels))

    @property
    def zoo_fn(self):
        return getattr(zoo, self.name.replace("-", "_"))

    @property
    def has_hyperprior(self) -> bool:
        return self.model_class is not FactorizedPrior


CODERS = {
    spec.name: spec
    for spec in (
        CoderSpec("bmshj2018-factorized", FactorizedPrior,
                  {q: 192 if q <= 5 else 320 for q in range(1, 9)}, "round"),
        CoderSpec("bmshj2018-hyperprior", ScaleHyperprior,
                  {q: 192 if q <= 5 else 320 for q in range(1, 9)}, "round"),
        CoderSpec("mbt2018-mean", MeanScaleHyperprior,
                  {q: 192 if q <= 4 else 320 for q in range(1, 9)}, "mean"),
        CoderSpec("mbt2018", JointAutoregressiveHierarchicalPriors,
                  {q: 192 if q <= 4 else 320 for q in range(1, 9)}, "context"),
        CoderSpec("cheng2020-anchor", Cheng2020Anchor,
                  {q: 128 if q <= 3 else 192 for q in range(1, 7)}, "context"),
        CoderSpec("cheng2020-attn", Cheng2020Attention,
                  {q: 128 if q <= 3 else 192 for q in range(1, 7)}, "context"),
    )
}


def get_spec(name: str) -> CoderSpec:
    return CODERS[canonical_coder(name)]


def check_quality(spec: CoderSpec, quality: int) -> None:
    check_coder_quality(spec.name, quality)


@dataclass(frozen=True)
class LoadedCoder:
    model: torch.nn.Module
    spec: CoderSpec
    quality: int
    weights: dict  # provenance for the manifest: source, path/url, sha256, trained


def _pretrained_url(spec: CoderSpec, quality: int) -> str:
    return model_urls[spec.name]["mse"][quality]


#: untrained_coder's scale of the last analysis layer.
UNTRAINED_GAIN = 32.0


def untrained_coder(spec: CoderSpec, quality: int, seed: int = 0, gain: float = UNTRAINED_GAIN):
    """A seeded random-init coder whose symbols are not all zero.

    A freshly initialized CompressAI coder maps every image to ŷ ≈ 0, which
    makes any exactness check vacuous. Scaling the last analysis layer by
    ``gain`` spreads y over many integers; ``update(force=True)`` then builds
    the entropy tables for that model. Meant for demos and tests only.
    """
    torch.manual_seed(seed)
    model = spec.zoo_fn(quality, pretrained=False)
    with torch.no_grad():
        # The last conv at g_a's top level: for cheng2020-attn the last conv in
        # modules() order is the attention mask's (under a sigmoid), and
        # scaling it leaves y near 0 and every symbol 0.
        last_conv = [m for m in model.g_a.children() if isinstance(m, torch.nn.Conv2d)][-1]
        last_conv.weight.mul_(gain)
        if last_conv.bias is not None:
            last_conv.bias.mul_(gain)
        ctx = getattr(model, "context_prediction", None)
        if ctx is not None:
            # MaskedConv2d masks its weight in place on first forward; the
            # decoder reads the raw weight, so it must already be masked.
            ctx.weight.mul_(ctx.mask)
    model.update(force=True)
    return model.eval()


def load_coder(name: str, quality: int, weights: str = "pretrained", seed: int = 0) -> LoadedCoder:
    """Build the coder `name` at `quality` with `weights`: "pretrained", "untrained" or a file path.

    "pretrained" is the zoo's released MSE model, fetched into (or read from)
    the torch hub cache under $TORCH_HOME. A path is a CompressAI checkpoint: a
    released ``.pth.tar`` or a training checkpoint holding a ``state_dict``.
    """
    spec = get_spec(name)
    check_quality(spec, quality)

    # The weights' identity (provenance["sha256"]) hashes what defines them: the file's tensors, or
    # the recipe of seeded ones. Never tensors computed here: the tables update() derives and even a
    # seeded init run through ATen and MKL, whose dispatch gives other last bits on another CPU.
    if weights == "untrained":
        model = untrained_coder(spec, quality, seed=seed)
        recipe = {"untrained": spec.name, "quality": quality, "seed": seed, "gain": UNTRAINED_GAIN}
        identity = recipe_sha256(recipe)
        provenance = {"source": "untrained", "trained": False, "seed": seed,
                      "note": "RANDOM WEIGHTS (seeded init, analysis gain 32) - for demos and tests only"}
    else:
        if weights == "pretrained":
            url = _pretrained_url(spec, quality)
            what = f"the pretrained {spec.name} q{quality}"
            # The cache is checked against the hash in the URL's file name before torch.load(weights_only=True).
            path = fetch(url, what, f"pass the checkpoint file directly: --weights /path/to/{os.path.basename(url)} "
                                    f"(or run `latentstore fetch-weights --coder {spec.name} --quality {quality}` "
                                    "where there is internet and copy $TORCH_HOME/hub here)")
            provenance = {"source": "pretrained", "trained": True, "url": url, "file_sha256": file_sha256(path)}
        else:
            path = Path(weights)
            if not path.is_file():
                raise WeightsError(
                    f"--weights {weights!r} is neither 'pretrained', 'untrained' nor an existing file"
                )
            what = f"checkpoint for {spec.name}"
            provenance = {"source": "file", "trained": True, "path": str(path.resolve()),
                          "file_sha256": file_sha256(path)}
        state = load_state(path, what)
        if isinstance(state, dict) and "state_dict" in state:  # a training checkpoint
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{path} holds no state_dict of tensors ({what})")
        state = load_pretrained(state)  # CompressAI's renaming of older checkpoints' keys
        model, identity = _from_state_dict(spec, state, source=str(path)), state_dict_sha256(state)

    provenance["sha256"] = identity
    return LoadedCoder(model=model.eval(), spec=spec, quality=quality, weights=provenance)


def _from_state_dict(spec: CoderSpec, state: dict, source: str) -> torch.nn.Module:
    try:
        model = spec.model_class.from_state_dict(state)
    except Exception as exc:
        raise WeightsError(f"{source} is not a {spec.name} checkpoint: {exc}") from exc
    if type(model) is not spec.model_class:
        raise WeightsError(f"{source} built {type(model).__name__}, expected {spec.model_class.__name__}")
    # Released checkpoints hold the CDF tables; user training checkpoints may not.
    model.update(force=False)
    return model.eval()


def load_coder_from_manifest(coder_entry: dict, weights: str | None = None) -> LoadedCoder:
    """The coder a store was built with, checked by the weights' sha256.

    `weights` overrides where to find them (e.g. the checkpoint moved to another
    machine); by default the manifest's own source is used.
    """
    recorded = coder_entry["weights"]
    if weights is None:
        weights = recorded["path"] if recorded["source"] == "file" else recorded["source"]
    coder = load_coder(coder_entry["name"], coder_entry["quality"], weights, seed=recorded.get("seed", 0))
    if coder.weights["sha256"] != recorded["sha256"]:
        raise WeightsError(
            f"The {coder_entry['name']} q{coder_entry['quality']} weights from {weights!r} are not the ones "
            f"the store was built with (sha256 {coder.weights['sha256'][:12]}… != {recorded['sha256'][:12]}…): "
            f"pass the original checkpoint"
        )
    return coder
