"""`latentstore build --dry-run`: the projected size and encoding time of a store, before paying for it.

Teacher features dominate a store (ResNet-50 at 224 in float16: about 1.4 MB
per sample, some 30x the latent), so the cost must show before a 1.28M-image
build starts. The projection encodes ONE real sample (the first source image
that decodes, variant 0) with the real coder and teacher, measures the bytes
of each member, and scales: samples = images × variants (no rejects assumed).
For tar shards it adds the tar framing exactly (a 512-byte header per member,
data padded to 512, 1024 end bytes, each shard padded to 10240); what it cannot
know is how the entropy-coded bitstreams and integer symbols of other images
differ in size from this one's (they are a small share once a teacher is on).

The time projection encodes a batch of copies of that crop as the build
batches them (up to TIMING_BATCH) and runs the teacher once, on this machine,
at the build's one thread per encoder process: seconds per sample × samples
gives CPU-hours, which --encoders or --part divide among cores. Image decoding
and writing (about 1% of a build) are left out; on the demo photos the
projection came within 5% (with a ResNet-50 teacher) and 20% (without) of a
real build's time. Nothing is written. Each step is announced through `say` as it starts (the CLI
prints them to stderr): importing and timing take tens of seconds.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

from ..errors import InputError
from ..store import numerics
from ..store.format import get_field, member_size
from .config import BuildConfig
from .crops_to_samples import make_sample
from .encoder import to_input
from .generic_encoder import make_encoder
from .prepare import Cutting, prepare
from .sources import open_source
from .timing import Profiler

TAR_BLOCK, TAR_RECORD, TAR_END = 512, 10240, 1024
TIMING_BATCH = 16  # crops encoded to time the coder: the per-crop cost barely falls past 16


def _tar_member(n: int) -> int:
    return TAR_BLOCK + -(-n // TAR_BLOCK) * TAR_BLOCK


def project(cfg: BuildConfig, say: Callable[[str], None] = lambda line: None) -> dict:
    """{"samples", "per_field": {member suffix: bytes}, "bytes_per_sample", "total_bytes", ...} for `cfg`."""
    cfg = cfg.resolved()
    numerics.require(cfg.numerics)  # time the encoder as the build will run it
    step = _Steps(say, 6 if cfg.teacher else 4)
    step(f"listing the images under {cfg.root}")
    source = open_source(cfg.dataset, cfg.root, cfg.split, limit=cfg.limit, label_file=cfg.label_file)
    if not source.items:
        raise InputError(f"No images found under {cfg.root} for split {cfg.split!r}")
    one = replace(cfg, variants=1)  # variant 0 is all the projection needs
    prepared = next((p for p in (prepare(item, Cutting.of(one)) for item in source.items) if not p.reject), None)
    if prepared is None:
        raise InputError(f"None of the {len(source.items)} images under {cfg.root} decodes")
    step(f"loading {cfg.coder} q{cfg.quality} ({cfg.weights} weights)")
    coder = cfg.load_coder()
    crop = prepared.crops[0][1]
    x, pad = to_input([crop])
    prof = Profiler()
    encoder = make_encoder(coder, prof)
    step(f"encoding one sample ({prepared.item.relpath}) to measure its fields")
    fields = make_sample(prepared, 0, encoder.encode(x)[0], pad, cfg).values()
    batch = min(cfg.batch_size, TIMING_BATCH)
    prof.totals.clear()
    step(f"timing the coder on a batch of {batch}")
    started = time.perf_counter()
    encoder.encode(x.expand(batch, -1, -1, -1).contiguous())
    seconds = (time.perf_counter() - started) / batch
    # --device cuda moves g_a (and h_a, inside "hyper": not counted off) off the CPU.
    g_a = prof.totals.get("g_a", [0.0])[0] / batch
    if cfg.teacher:
        step(f"loading the teacher {cfg.teacher}")
        teacher = cfg.load_teacher()
        teacher.stored_fields(crop)  # untimed: first-call set-up
        step("timing the teacher")
        started = time.perf_counter()
        fields.update(teacher.stored_fields(crop))
        taken = time.perf_counter() - started
        seconds += taken
        g_a += taken   # --device cuda runs the teacher on the GPU too
    per_field = dict(sorted((get_field(name).ext, member_size(name, value)) for name, value in fields.items()))
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
            "total_bytes": total, "seconds_per_sample": seconds, "timing_batch": batch,
            "cpu_hours": samples * seconds / 3600, "encoders": cfg.encoders,
            "cuda_cpu_seconds_per_sample": max(seconds - g_a, 0.0),
            "cuda_cpu_hours": samples * max(seconds - g_a, 0.0) / 3600, "device": cfg.device}


class _Steps:
    """Announces step i of n with the seconds since the first: "[2/4 0.3 s] loading ..."."""

    def __init__(self, say: Callable[[str], None], total: int):
        self.say, self.total, self.done, self.started = say, total, 0, time.perf_counter()

    def __call__(self, what: str) -> None:
        self.done += 1
        self.say(f"[{self.done}/{self.total} {time.perf_counter() - self.started:.1f} s] {what} ...")


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
    lines.append(f"  projected encoding time: {p['seconds_per_sample']:.3f} s per sample on this machine "
                 f"(batch {p['timing_batch']}{', with teacher' if p['teacher_bytes_per_sample'] else ''}) = "
                 f"{_hours(p['cpu_hours'])} of CPU; {_hours(p['cpu_hours'] / p['encoders'])} of wall time "
                 f"with --encoders {p['encoders']}, or split it with --part i/N")
    if "cuda_cpu_hours" in p:
        lines.append(f"  with --device cuda (g_a{' and teacher' if p['teacher_bytes_per_sample'] else ''} on the GPU, "
                     f"not timed here): {p['cuda_cpu_seconds_per_sample']:.3f} s of CPU per sample = "
                     f"{_hours(p['cuda_cpu_hours'])} of CPU; {_hours(p['cuda_cpu_hours'] / p['encoders'])} of "
                     f"wall time with --encoders {p['encoders']}, if the GPU keeps up")
    return "\n".join(lines)


def _hours(h: float) -> str:
    return f"{h * 60:.1f} min" if h < 1 else f"{h:,.1f} h"
