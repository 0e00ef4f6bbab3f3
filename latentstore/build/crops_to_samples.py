"""The encode stage of a build: prepared crops -> Samples (ŷ, symbols, strings, meta, teacher maps).

Crops are encoded in batches of ``--batch-size`` (the Encoder keeps every stored
value exact at any batch size, latentstore/build/encoder.py). The teacher runs on one
crop per forward on the CPU, since a batched convolution changes its float bits
with the batch size; ``--device cuda`` batches it on the GPU instead
(teacher/device.py), which the manifest records.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..errors import ConfigError
from ..store.format import Padding, sample_key, smallest_int_dtype
from ..store.sample import Sample, SampleMeta
from .config import BuildConfig
from .encoder import EncodedImage, to_input
from .prepare import Prepared
from .timing import stage as _stage


def batches(prepared, batch_size: int):
    """(prepared, variant) pairs grouped into lists of at most batch_size crops."""
    pairs = ((p, v) for p in prepared for v in range(len(p.crops)))
    while chunk := list(itertools.islice(pairs, batch_size)):
        yield chunk


def make_sample(p: Prepared, variant: int, enc: EncodedImage, pad: Padding, cfg: BuildConfig) -> Sample:
    """One variant of one prepared image, encoded, as the Sample every backend stores."""
    params, crop = p.crops[variant]
    h, w = crop.shape[:2]
    key = sample_key(p.item.key, variant)
    bits = enc.bits()
    meta = SampleMeta(key=key, item=p.item.key, label=p.item.label, variant=variant, source=p.item.relpath,
                      augment=params, image_size=[h, w], padding=pad.as_dict(),
                      valid_region=pad.valid_region(h, w), y_shape=list(enc.y_shape),
                      z_shape=list(enc.z_shape) if enc.z_shape else None, bits=bits, bpp=bits / (h * w))
    fields = {"y_hat": enc.y_hat.astype(cfg.y_hat_dtype),
              "y_string": enc.y_string, "label": p.item.label}
    if enc.symbols is not None:  # None: the generic path, whose symbols stay inside the coder
        fields["symbols"] = enc.symbols.astype(smallest_int_dtype(enc.symbols))
    if p.labels:
        fields["label_map"] = p.labels[variant]
    if enc.z_string is not None:
        fields["z_string"] = enc.z_string
    optional = {"means": enc.means, "scales": enc.scales, "z_symbols": enc.z_symbols}
    for name in cfg.fields:
        if optional[name] is None:
            raise ConfigError(f"--fields {name}: coder {cfg.coder} has no {name}")
        value = optional[name]
        fields[name] = value.astype(smallest_int_dtype(value)) if name == "z_symbols" else value.astype(np.float32)
    return Sample(key, variant, fields, meta)


def encode_samples(cfg: BuildConfig, ok: list, encoder, bar, teacher=None, prof=None):
    """The Samples of every crop of the prepared images `ok`, image-major (source order). `encoder`: an
    encode.Encoder or a generic_encode.GenericEncoder. `teacher`: a
    teacher.load.Teacher, or a device_teacher.BatchedTeacher (--device cuda), or None."""
    for chunk in batches(ok, cfg.batch_size):
        crops = [p.crops[v][1] for p, v in chunk]
        x, pad = to_input(crops)
        teacher_maps = [{}] * len(crops)
        if teacher is not None:
            with _stage(prof, "teacher"):
                teacher_maps = teacher.batch_fields(crops)
        for (p, v), enc, maps in zip(chunk, encoder.encode(x), teacher_maps):
            with _stage(prof, "serialize"):
                sample = make_sample(p, v, enc, pad, cfg)
            sample.fields.update(maps)
            yield sample
        bar.update(len(chunk))
