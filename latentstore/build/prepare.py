"""The first stage of a build: read and decode each source image, cut its augmented variants.

`prepare` is pure and runs in decode processes (``--workers``, the build's process pool: pool.py);
`prepared_stream` hands the results on in source order, a bounded number ahead of the encoder.
A source that does not decode becomes a reject with its reason, never a silent
gap (docs/reliability.md §12).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .augment import apply, sample_params, variant_rng
from .images import RejectedImage, load_rgb, special_file
from .pool import DECODERS, run_in_processes
from .sources import IGNORE_INDEX, SourceItem, fingerprint, load_label_map
from .timing import Profiler, stage as _stage

if TYPE_CHECKING:
    from .config import BuildConfig  # not imported at run time: it imports the codec


@dataclass
class Prepared:
    """One source image after decode + augmentation: a crop per variant, or a reject reason."""
    item: SourceItem
    crops: list = field(default_factory=list)    # [(params, uint8 HxWx3)] per variant
    labels: list = field(default_factory=list)   # segmentation: uint8 HxW train-id map per variant
    reject: str | None = None
    timings: dict | None = None                  # --profile: Profiler.snapshot() of this image's stages
    fingerprint: dict | None = None              # the source files as encoded (datasets.fingerprint)


@dataclass(frozen=True)
class Cutting:
    """What `prepare` needs of a build's config: how to cut each image's variants. A decode process gets
    this alone, so it starts without importing the codec."""
    seed: int
    variants: int
    augment: str
    crop: int
    resize: int
    scale: tuple | None

    @classmethod
    def of(cls, cfg: BuildConfig) -> Cutting:
        return cls(cfg.seed, cfg.variants, cfg.augment, cfg.crop, cfg.resize, cfg.scale)


def prepare(item: SourceItem, cfg: Cutting, profile: bool = False) -> Prepared:
    """Decode one image and cut its variants. Pure; runs in decode processes."""
    prof = Profiler(enabled=profile)
    special = special_file(item.path)
    if special:  # rejected before it is opened: a FIFO or /dev/zero would hang the fingerprint's hash
        return Prepared(item, reject=special, timings=prof.snapshot() if profile else None,
                        fingerprint={"image": None})
    with prof.stage("read/decode"):
        fp = fingerprint(item)  # before decoding: a file changed after this is caught on the next run
    try:
        with prof.stage("read/decode"):
            img = load_rgb(item.path)
    except RejectedImage as exc:
        return Prepared(item, reject=exc.reason, timings=prof.snapshot() if profile else None, fingerprint=fp)
    label = None
    if item.label_path is not None:  # a bad label map is an InputError naming it, not a reject
        with prof.stage("read/decode"):
            label = load_label_map(item, img.size)
    options = {"scale": cfg.scale} if cfg.scale is not None else {}
    crops, labels = [], []
    with prof.stage("augment"):
        for v in range(cfg.variants):
            params = sample_params(variant_rng(cfg.seed, item.key, v), img.size, cfg.augment,
                                   crop=cfg.crop, resize=cfg.resize, **options)
            crops.append((params, np.asarray(apply(img, params), dtype=np.uint8)))
            if label is not None:  # the same geometry, nearest neighbour, padded with ignore
                labels.append(np.asarray(apply(label, params, resample="nearest", fill=IGNORE_INDEX),
                                         dtype=np.uint8))
    return Prepared(item, crops, labels, timings=prof.snapshot() if profile else None, fingerprint=fp)


def prepared_stream(items, cfg: BuildConfig, ahead: int, prof: Profiler | None = None):
    """Prepared images in source order; with ``cfg.workers`` decode processes, at most `ahead` ahead.

    Bounded on purpose: the encoder is the slower stage, and unbounded workers would hold every
    decoded crop of the dataset in memory while it catches up. With `prof`, each image's
    decode/augment time is added (where it ran), and the time the encoder waited for a
    process as "wait for decode".
    """
    profile = prof is not None and prof.enabled
    cut = Cutting.of(cfg)
    if cfg.workers == 0:
        for item in items:
            p = prepare(item, cut, profile)
            if profile:
                prof.merge(p.timings)
            yield p
        return
    results = run_in_processes(_prepare_job, _prepare_setup, (cut, profile), list(items), cfg.workers,
                               ahead=ahead, role=DECODERS)
    try:
        while True:
            with _stage(prof, "wait for decode"):
                p = next(results, None)
            if p is None:
                return
            if profile:
                prof.merge(p.timings, where="workers")
            yield p
    finally:
        results.close()  # stops the processes when the build stops early


def _prepare_setup(cut: Cutting, profile: bool) -> tuple:
    return cut, profile


def _prepare_job(state: tuple, item: SourceItem, progress) -> Prepared:
    cut, profile = state
    return prepare(item, cut, profile)
