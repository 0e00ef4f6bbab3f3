"""The coders' names, aliases and qualities as plain data: `build --help` and argument errors need no CompressAI.

latentstore.coders.registry builds its CoderSpec table from these qualities (tests/test_startup.py checks both agree).
"""
from __future__ import annotations

from ..errors import ConfigError

#: coder name (compressai.zoo) -> qualities of its released weights
QUALITIES = {
    "bmshj2018-factorized": range(1, 9),
    "bmshj2018-hyperprior": range(1, 9),
    "mbt2018-mean": range(1, 9),
    "mbt2018": range(1, 9),
    "cheng2020-anchor": range(1, 7),
    "cheng2020-attn": range(1, 7),
    # not in the zoo (--weights PATH or untrained): the quality labels a checkpoint's rate point
    "bmshj2018-factorized-relu": range(1, 9),
    "elic2022-official": range(1, 9),
    "elic2022-chandelier": range(1, 9),
    "cheng2020-checkerboard": range(1, 9),
}
ALIASES = {"cheng2020": "cheng2020-anchor"}
#: what the zoo's released weights were trained for (--metric)
METRICS = ("mse", "ms-ssim")


def is_custom(name: str) -> bool:
    """A user's own coder, `package.module:ClassOrFactory` (latentstore.coders.custom imports it)."""
    return ":" in name


def canonical_coder(name: str) -> str:
    """The coder's zoo name (an alias resolved), or a custom coder's name as given; ConfigError listing
    the valid names otherwise."""
    if is_custom(name):
        return name
    canonical = ALIASES.get(name, name)
    if canonical not in QUALITIES:
        raise ConfigError(f"Unknown coder {name!r}: choose one of {', '.join(sorted(QUALITIES) + sorted(ALIASES))}")
    return canonical


def check_coder_quality(name: str, quality: int) -> None:
    if is_custom(name):   # the user's label of the checkpoint's rate point
        return
    qualities = QUALITIES[canonical_coder(name)]
    if quality not in qualities:
        raise ConfigError(f"Invalid quality {quality} for {canonical_coder(name)}: "
                          f"choose {qualities[0]}-{qualities[-1]}")


def check_metric(weights: str, metric: str) -> None:
    if metric not in METRICS:
        raise ConfigError(f"Invalid --metric {metric!r}: choose {' or '.join(METRICS)}")
    if metric != "mse" and weights != "pretrained":
        raise ConfigError(f"--metric {metric} chooses which zoo weights --weights pretrained loads; "
                          f"--weights {weights} has no metric to choose: drop --metric")


def coder_help() -> str:
    return ("CompressAI coder: " + ", ".join(list(QUALITIES) + [f"{a} (= {c})" for a, c in ALIASES.items()])
            + "; or your own CompressionModel as package.module:ClassOrFactory (with --weights PATH)")
