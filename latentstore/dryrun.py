"""`latentstore build --dry-run`: the projected size of a store, before paying for it.

Teacher features dominate a store (ResNet-50 at 224 in float16: about 1.4 MB
per sample, some 30x the latent), so the cost must show before a 1.28M-image
build starts. The projection encodes ONE real sample (the first source image
that decodes, variant 0) with the real coder and teacher, measures the bytes
of each member, and scales: samples = images × variants (no rejects assumed).
For tar shards it adds the tar framing exactly (a 512-byte header per member,
data padded to 512, 1024 end bytes, each shard padded to 10240); what it cannot
know is how the entropy-coded bitstreams and integer symbols of other images
differ in size from this one's (they are a small share once a teacher is on).
Nothing is written.
"""
from __future__ import annotations

from dataclasses import replace

from .build import BuildConfig, prepare, sample_files, to_input
from .coders import load_coder
from .datasets import open_source
from .encode import Encoder
from .errors import InputError
from .teachers import load_teacher

TAR_BLOCK, TAR_RECORD, TAR_END = 512, 10240, 1024


def _tar_member(n: int) -> int:
    return TAR_BLOCK + -(-n // TAR_BLOCK) * TAR_BLOCK


def project(cfg: BuildConfig) -> dict:
    """{"samples", "per_field": {member suffix: bytes}, "bytes_per_sample", "total_bytes", ...} for `cfg`."""
    cfg = cfg.resolved()
    source = open_source(cfg.dataset, cfg.root, cfg.split, limit=cfg.limit, label_file=cfg.label_file)
    if not source.items:
        raise InputError(f"No images found under {cfg.root} for split {cfg.split!r}")
    one = replace(cfg, variants=1)  # variant 0 is all the projection needs
    prepared = next((p for p in (prepare(item, one) for item in source.items) if not p.reject), None)
    if prepared is None:
        raise InputError(f"None of the {len(source.items)} images under {cfg.root} decodes")
    coder = load_coder(cfg.coder, cfg.quality, cfg.weights, seed=cfg.seed)
    x, pad = to_input([prepared.crops[0][1]])
    files = sample_files(prepared, 0, Encoder(coder).encode(x)[0], pad, cfg)
    files.pop("__key__")
    if cfg.teacher:
        teacher = load_teacher(cfg.teacher, cfg.teacher_weights, cfg.teacher_strides, cfg.teacher_layers,
                               cfg.teacher_dtype, seed=cfg.seed)
        files.update(teacher.sample_files(prepared.crops[0][1]))
    per_field = {ext: len(data) for ext, data in sorted(files.items())}
    samples = len(source.items) * cfg.variants
    if cfg.format == "webdataset":
        per_sample = sum(_tar_member(n) for n in per_field.values())
        sizes = [len(source.items[i:i + cfg.shard_size]) for i in range(0, len(source.items), cfg.shard_size)]
        total = cfg.variants * sum(-(-(n * per_sample + TAR_END) // TAR_RECORD) * TAR_RECORD for n in sizes)
    else:  # other backends: the payload only
        per_sample = sum(per_field.values())
        total = samples * per_sample
    teacher_bytes = sum(n for ext, n in per_field.items() if ext.startswith("teacher_"))
    return {"store": cfg.out, "split": cfg.split, "format": cfg.format, "images": len(source.items),
            "variants": cfg.variants, "samples": samples, "measured_on": prepared.item.relpath,
            "per_field": per_field, "bytes_per_sample": per_sample, "teacher_bytes_per_sample": teacher_bytes,
            "total_bytes": total}


def render(p: dict) -> str:
    lines = [f"dry run: {p['store']} split {p['split']!r} ({p['format']}), nothing written",
             f"  {p['images']} images x {p['variants']} variant(s) = {p['samples']} samples "
             f"(no rejects assumed; sizes measured on {p['measured_on']})",
             "  bytes per sample:"]
    lines += [f"    {ext:<24} {n:>12,}" for ext, n in p["per_field"].items()]
    if p["teacher_bytes_per_sample"]:
        lines.append(f"    {'(teacher fields)':<24} {p['teacher_bytes_per_sample']:>12,}")
    lines.append(f"    {'(on disk, framed)':<24} {p['bytes_per_sample']:>12,}")
    lines.append(f"  projected store size: {p['total_bytes'] / 1e9:,.3f} GB ({p['total_bytes']:,} bytes)")
    return "\n".join(lines)
