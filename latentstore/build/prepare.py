"""The first stage of a build: read and decode each source image, cut its augmented variants.

`prepare` is pure and runs in worker processes (``--workers``); `prepared_stream`
hands the results on in source order, a bounded number ahead of the encoder.
A source that does not decode becomes a reject with its reason, never a silent
gap (docs/reliability.md §12).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from .augment import apply, sample_params, variant_rng
from .config import BuildConfig
from .images import RejectedImage, load_rgb, special_file
from .sources import IGNORE_INDEX, SourceItem, fingerprint, load_label_map
from .timing import Profiler, stage as _stage


@dataclass
class Prepared:
    """One source image after decode + augmentation: a crop per variant, or a reject reason."""
    item: SourceItem
    crops: list = field(default_factory=list)    # [(params, uint8 HxWx3)] per variant
    labels: list = field(default_factory=list)   # segmentation: uint8 HxW train-id map per variant
    reject: str | None = None
    timings: dict | None = None                  # --profile: Profiler.snapshot() of this image's stages
    fingerprint: dict | None = None              # the source files as encoded (datasets.fingerprint)


def prepare(item: SourceItem, cfg: BuildConfig, profile: bool = False) -> Prepared:
    """Decode one image and cut its variants. Pure; runs in worker processes."""
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


def prepared_stream(items, cfg: BuildConfig, pool, ahead: int, prof: Profiler | None = None):
    """Prepared images in source order; with a pool, at most `ahead` are decoded ahead.

    Bounded on purpose: Pool.imap would queue the whole dataset and hold every
    decoded crop in memory while the (slower) encoder catches up. With `prof`,
    each image's decode/augment time is added (where it ran), and the time the
    encoder waited for a worker as "wait for decode".
    """
    profile = prof is not None and prof.enabled
    if pool is None:
        for item in items:
            p = prepare(item, cfg, profile)
            if profile:
                prof.merge(p.timings)
            yield p
        return
    pending = collections.deque()

    def next_ready():
        with _stage(prof, "wait for decode"):
            p = pending.popleft().get()
        if profile:
            prof.merge(p.timings, where="workers")
        return p

    for item in items:
        pending.append(pool.apply_async(prepare, (item, cfg, profile)))
        if len(pending) >= ahead:
            yield next_ready()
    while pending:
        yield next_ready()
