"""One table of CompressAI coders and one way to load them.

The table mirrors ``compressai.zoo.image.cfgs`` but is keyed by what users type
and says what the store needs to know: the zoo function, the valid qualities,
the latent channel count per quality, and whether the coder is autoregressive
(its ŷ is ``round(y - μ) + μ`` decoded serially, see docs/FORMAT.md).

Coders latentstore does not reimplement (ELIC, the checkerboard coder) have the latent kind
"generic": build/generic_encoder.py encodes them with their own compress() (and, unless compress()
already returns the decoder's ŷ, decompress()), exact by construction; docs/coders.md lists every coder,
its ŷ and its path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from compressai import zoo
from compressai.models import (
    Cheng2020Anchor,
    Cheng2020AnchorCheckerboard,
    Cheng2020Attention,
    Elic2022Chandelier,
    Elic2022Official,
    FactorizedPrior,
    FactorizedPriorReLU,
    JointAutoregressiveHierarchicalPriors,
    MeanScaleHyperprior,
    ScaleHyperprior,
)
from compressai.zoo.image import cfgs, model_urls
from compressai.zoo.pretrained import load_pretrained

from ..errors import WeightsError
from ..store.format import file_sha256
from ..weights import fetch, load_state, recipe_sha256, state_dict_sha256
from . import custom as custom_coder
from .names import ALIASES, METRICS, canonical_coder, check_coder_quality, check_metric, is_custom  # noqa: F401


@dataclass(frozen=True)
class CoderSpec:
    name: str               # compressai.zoo name, e.g. "cheng2020-anchor"
    model_class: type       # the exact class the zoo builds (checked with `type(m) is`)
    channels: dict          # quality -> latent channels M of y
    # How ŷ relates to the coded symbols (docs/method.md §2):
    #   "round":   ŷ = round(y), symbols = round(y) (after the EntropyBottleneck's medians)
    #   "mean":    ŷ = round(y - μ) + μ, μ from the hyperprior
    #   "context": as "mean", μ also from the causal context of decoded ŷ (serial)
    #   "generic": whatever the coder's decompress() hands g_s (build/generic_encoder.py)
    latent_kind: str
    in_zoo: bool = True     # compressai.zoo builds it (and has weights); else the class itself (build_untrained)
    # Generic path only: compress() returns as "y_hat" the very tensor decompress() hands g_s, so the build
    # takes it and skips decompress(). True where compress() is CompressAI's latent codecs (hyperprior,
    # checkerboard, channel groups, Gaussian conditional): each decodes its own strings inside compress()
    # with decompress()'s calls on the same inputs, so ŷ is the decoder's by construction (docs/coders.md).
    y_hat_in_compress: bool = False
    untrained_gain: float = 32.0  # untrained_coder's scale of g_a's last conv: enough for non-trivial symbols

    @property
    def qualities(self) -> tuple:
        return tuple(sorted(self.channels))

    @property
    def zoo_fn(self):
        return getattr(zoo, self.name.replace("-", "_"))

    @property
    def has_hyperprior(self) -> bool:
        return not issubclass(self.model_class, FactorizedPrior)

    @property
    def path(self) -> str:
        """How a build encodes it: "single-pass" (build/encoder.py) or "generic" (build/generic_encoder.py)."""
        return "generic" if self.latent_kind == "generic" else "single-pass"

    def build_untrained(self, quality: int) -> torch.nn.Module:
        if self.in_zoo:
            return self.zoo_fn(quality, pretrained=False)
        # The zoo's table of (N, M) where it has one; else the class's own defaults.
        return self.model_class(*cfgs[self.name][quality]) if self.name in cfgs else self.model_class()


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
        # FactorizedPrior with ReLU for GDN: the same entropy model, so the single pass applies. Built
        # from the class: CompressAI 1.2.8's zoo function for it builds the GDN FactorizedPrior, and the
        # zoo has no weights for it.
        CoderSpec("bmshj2018-factorized-relu", FactorizedPriorReLU,
                  {q: 192 if q <= 5 else 320 for q in range(1, 9)}, "round", in_zoo=False, untrained_gain=128.0),
        # Not in the zoo: the quality is the user's label of a checkpoint's rate point; the
        # class's defaults fix the channels (Elic: M=320; checkerboard: M=N=192).
        CoderSpec("elic2022-official", Elic2022Official, {q: 320 for q in range(1, 9)}, "generic", in_zoo=False,
                  y_hat_in_compress=True),
        CoderSpec("elic2022-chandelier", Elic2022Chandelier, {q: 320 for q in range(1, 9)}, "generic",
                  in_zoo=False, y_hat_in_compress=True),
        CoderSpec("cheng2020-checkerboard", Cheng2020AnchorCheckerboard, {q: 192 for q in range(1, 9)}, "generic",
                  in_zoo=False, y_hat_in_compress=True),
    )
}


def get_spec(name: str) -> CoderSpec:
    """The named coder's spec; ``package.module:ClassOrFactory`` imports that module (coders/custom.py)."""
    if is_custom(name):
        target, _ = custom_coder.resolve(name)
        return CoderSpec(name, target, {}, "generic", in_zoo=False)
    return CODERS[canonical_coder(name)]


def check_quality(spec: CoderSpec, quality: int) -> None:
    check_coder_quality(spec.name, quality)


@dataclass(frozen=True)
class LoadedCoder:
    model: torch.nn.Module
    spec: CoderSpec
    quality: int
    weights: dict  # provenance for the manifest: source, path/url, sha256, trained

    @property
    def channels(self) -> int:
        """Latent channels M of ŷ: the table's for zoo coders, the model's own for the others
        (a checkpoint of another width than the class's default)."""
        if self.spec.in_zoo:
            return self.spec.channels[self.quality]
        return latent_channels(self.model)


def latent_channels(model: torch.nn.Module) -> int:
    """M of g_a's output, from one 64x64 forward (g_a's last layer need not be a plain conv)."""
    probe = torch.zeros(1, 3, 64, 64, device=next(model.parameters()).device)
    with torch.no_grad():
        return int(model.g_a(probe).shape[1])


#: The zoo's weights are trained for one of these distortion metrics.
def _pretrained_url(spec: CoderSpec, quality: int, metric: str) -> str:
    urls = model_urls.get(spec.name, {}).get(metric, {})
    if quality not in urls:
        raise WeightsError(
            f"CompressAI's zoo publishes no {metric} weights for {spec.name} (q{quality}): pass --weights PATH "
            "(a state_dict or a CompressAI checkpoint) or --weights untrained")
    return urls[quality]


def untrained_coder(spec: CoderSpec, quality: int, seed: int = 0, gain: float | None = None):
    """A seeded random-init coder whose symbols are not all zero.

    A freshly initialized CompressAI coder maps every image to ŷ ≈ 0, which
    makes any exactness check vacuous. Scaling the last analysis layer by
    ``gain`` spreads y over many integers; ``update(force=True)`` then builds
    the entropy tables for that model. Meant for demos and tests only.
    """
    gain = spec.untrained_gain if gain is None else gain
    torch.manual_seed(seed)
    model = spec.build_untrained(quality)
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


def load_coder(name: str, quality: int, weights: str = "pretrained", seed: int = 0,
               metric: str = "mse") -> LoadedCoder:
    """Build the coder `name` at `quality` with `weights`: "pretrained", "untrained" or a file path.

    "pretrained" is the zoo's released model for `metric` (mse or ms-ssim), fetched
    into (or read from) the torch hub cache under $TORCH_HOME. A path is a CompressAI
    checkpoint: a released ``.pth.tar`` or a training checkpoint holding a ``state_dict``.
    """
    spec = get_spec(name)
    check_quality(spec, quality)
    check_metric(weights, metric)
    if is_custom(name):
        return _load_custom(spec, quality, weights, seed)

    # The weights' identity (provenance["sha256"]) hashes what defines them: the file's tensors, or
    # the recipe of seeded ones. Never tensors computed here: the tables update() derives and even a
    # seeded init run through ATen and MKL, whose dispatch gives other last bits on another CPU.
    if weights == "untrained":
        model = untrained_coder(spec, quality, seed=seed)
        recipe = {"untrained": spec.name, "quality": quality, "seed": seed, "gain": spec.untrained_gain}
        identity = recipe_sha256(recipe)
        provenance = {"source": "untrained", "trained": False, "seed": seed,
                      "note": f"RANDOM WEIGHTS (seeded init, analysis gain {spec.untrained_gain:g}) - "
                              "for demos and tests only"}
    else:
        if weights == "pretrained":
            url = _pretrained_url(spec, quality, metric)
            what = f"the pretrained {spec.name} q{quality}" + ("" if metric == "mse" else f" ({metric})")
            # The cache is checked against the hash in the URL's file name before torch.load(weights_only=True).
            path = fetch(url, what, f"pass the checkpoint file directly: --weights /path/to/{os.path.basename(url)} "
                                    f"(or run `latentstore fetch-weights --coder {spec.name} --quality {quality}` "
                                    "where there is internet and copy $TORCH_HOME/hub here)")
            provenance = {"source": "pretrained", "trained": True, "url": url, "file_sha256": file_sha256(path)}
            if metric != "mse":  # the default is not recorded: provenance without "metric" means mse
                provenance["metric"] = metric
        else:
            path = Path(weights)
            if not path.is_file():
                raise WeightsError(
                    f"--weights {weights!r} is neither 'pretrained', 'untrained' nor an existing file"
                )
            what = f"checkpoint for {spec.name}"
            provenance = {"source": "file", "trained": True, "path": str(path.resolve()),
                          "file_sha256": file_sha256(path)}
        state = load_pretrained(_state_dict(path, what))  # CompressAI's renaming of older checkpoints' keys
        model, identity = _from_state_dict(spec, state, source=str(path)), state_dict_sha256(state)

    provenance["sha256"] = identity
    return LoadedCoder(model=model.eval(), spec=spec, quality=quality, weights=provenance)


def _load_custom(spec: CoderSpec, quality: int, weights: str, seed: int) -> LoadedCoder:
    """A user's coder (coders/custom.py): its weights file, or its own seeded init for tests and demos."""
    _, code = custom_coder.resolve(spec.name)
    if weights == "untrained":
        torch.manual_seed(seed)
        model = custom_coder.build_model(spec.name, spec.model_class, None, "untrained")
        provenance = {"source": "untrained", "trained": False, "seed": seed,
                      "note": "RANDOM WEIGHTS (the model's own seeded init) - for demos and tests only",
                      "sha256": recipe_sha256({"untrained": spec.name, "seed": seed})}
    else:
        path = Path(weights)
        if weights == "pretrained" or not path.is_file():
            raise WeightsError(f"--coder {spec.name} takes its weights as --weights PATH (a state_dict or a "
                               f"checkpoint holding one); {weights!r} is no file")
        state = _state_dict(path, f"checkpoint for {spec.name}")
        model = custom_coder.build_model(spec.name, spec.model_class, state, str(path))
        provenance = {"source": "file", "trained": True, "path": str(path.resolve()),
                      "file_sha256": file_sha256(path), "sha256": state_dict_sha256(state)}
    provenance["code"] = code
    return LoadedCoder(model=model, spec=spec, quality=quality, weights=provenance)


def _state_dict(path: Path, what: str) -> dict:
    state = load_state(path, what)
    if isinstance(state, dict) and "state_dict" in state:  # a training checkpoint
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state_dict of tensors ({what})")
    return state


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
    coder = load_coder(coder_entry["name"], coder_entry["quality"], weights, seed=recorded.get("seed", 0),
                       metric=recorded.get("metric", "mse") if weights == "pretrained" else "mse")
    custom_coder.check_same_code(coder_entry["name"], recorded.get("code"))
    if coder.weights["sha256"] != recorded["sha256"]:
        raise WeightsError(
            f"The {coder_entry['name']} q{coder_entry['quality']} weights from {weights!r} are not the ones "
            f"the store was built with (sha256 {coder.weights['sha256'][:12]}… != {recorded['sha256'][:12]}…): "
            f"pass the original checkpoint"
        )
    return coder
