"""`latentstore build`: source -> decode + augment -> encode -> shards -> manifest.

The work is split into item groups of ``shard_size`` source images. Group j
becomes one shard per variant, committed atomically with a record of its
shards and rejects (see writers/webdataset.py). Which images land in which
shard is a pure function of the sorted source list, so a rerun of the same
command skips committed groups and produces the rest, and the finished store
does not depend on batch size, worker count or interruptions. The manifest is
written last, only when every group is committed.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import itertools
import json
import multiprocessing
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import __version__
from .augment import apply, sample_params, variant_rng
from .build_config import Y_HAT_DTYPES, BuildConfig, check_device_present, device_entry
from .coders import load_coder
from .datasets import (IGNORE_INDEX, SourceItem, fingerprint, listing_digest, load_label_map, open_source,
                       source_changes)
from .encode import STORE_THREADS, EncodedImage, Encoder
from .errors import ConfigError, InputError, WeightsError
from .format import (ENCODER_REVISION, FIELDS, Padding, commit_record_name, encode_field,
                     sample_key, smallest_int_dtype, write_json_atomic)
from .images import RejectedImage, load_rgb
from .parallel import run_in_processes
from .profile import Profiler, stage as _stage
from .seal import PARTS_DIR, RESUME_FREE, part_file, read_parts, seal
from .teacher.load import load_teacher, teacher_entry
from .writers import WRITERS

# --------------------------------------------------------------------------- stages

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


def batches(prepared, batch_size: int):
    """(prepared, variant) pairs grouped into lists of at most batch_size crops."""
    pairs = ((p, v) for p in prepared for v in range(len(p.crops)))
    while chunk := list(itertools.islice(pairs, batch_size)):
        yield chunk


def to_input(crops: list) -> tuple[torch.Tensor, Padding]:
    """Stack same-size uint8 crops into a [B,3,H,W] float tensor, zero-padded to multiples of 64."""
    h, w = crops[0].shape[:2]
    pad = Padding.centered(h, w)
    # contiguous(): the permuted view is channels_last, which changes the coder's kernels.
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
    return F.pad(x, (pad.left, pad.right, pad.top, pad.bottom)), pad


def sample_files(p: Prepared, variant: int, enc: EncodedImage, pad: Padding, cfg: BuildConfig) -> dict:
    """The tar members of one sample (see format.FIELDS)."""
    params, crop = p.crops[variant]
    h, w = crop.shape[:2]
    key = sample_key(p.item.key, variant)
    bits = enc.bits()
    meta = {
        "key": key, "item": p.item.key, "label": p.item.label, "variant": variant,
        "source": p.item.relpath, "augment": params, "image_size": [h, w],
        "padding": pad.as_dict(), "valid_region": pad.valid_region(h, w),
        "y_shape": list(enc.y_shape), "z_shape": list(enc.z_shape) if enc.z_shape else None,
        "bits": bits, "bpp": bits / (h * w),
    }
    fields = {
        "y_hat": enc.y_hat.astype(Y_HAT_DTYPES[cfg.y_hat_dtype]),
        "symbols": enc.symbols.astype(smallest_int_dtype(enc.symbols)),
        "y_string": enc.y_string, "label": p.item.label, "meta": meta,
    }
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
    files = {FIELDS[name].ext: encode_field(name, value) for name, value in fields.items()}
    files["__key__"] = key
    return files


# --------------------------------------------------------------------------- driver

def build(cfg: BuildConfig, progress: bool = True, profiler: Profiler | None = None) -> dict | None:
    """Build (or finish building) one split, or one part of it; returns the manifest once sealed.

    A plain build seals its split into manifest.json at the end. A partitioned
    build (``part=(i, N)``, N > 1) writes its part manifest only: run
    ``latentstore seal`` when every part has finished. Returns None then.
    ``profiler`` (latentstore.profile) collects the time per stage, from every process.
    """
    cfg = cfg.resolved()
    check_device_present(cfg.device)
    out = Path(cfg.out)
    part, parts = cfg.part
    source = open_source(cfg.dataset, cfg.root, cfg.split, limit=cfg.limit, label_file=cfg.label_file)
    if not source.items:
        raise InputError(f"No images found under {cfg.root} for split {cfg.split!r}")
    coder = load_coder(cfg.coder, cfg.quality, cfg.weights, seed=cfg.seed)
    teacher = load_teacher(cfg.teacher, cfg.teacher_weights, cfg.teacher_strides, cfg.teacher_layers,
                           cfg.teacher_dtype, seed=cfg.seed) if cfg.teacher else None
    out.mkdir(parents=True, exist_ok=True)
    with _build_lock(out, cfg.split, part, parts):
        _check_parts(out, cfg.split, part, parts)
        _check_resume(out, cfg, coder.weights, teacher)
        return _build_locked(cfg, out, source, coder, teacher, progress, profiler)


def _build_locked(cfg, out, source, coder, teacher, progress, profiler):
    """The build proper, under the (split, part) lock: encode what is missing or changed, then commit."""
    part, parts = cfg.part
    groups = [source.items[i:i + cfg.shard_size] for i in range(0, len(source.items), cfg.shard_size)]
    mine = list(range(part, len(groups), parts))
    records = _current_records(out, cfg, groups, mine, progress)
    todo = [j for j in mine if records[j] is None]
    rejects_so_far = sum(len(rec["rejects"]) for rec in records.values() if rec)

    prof = profiler if profiler is not None and profiler.enabled else None
    pool = multiprocessing.get_context("fork").Pool(cfg.workers) if cfg.workers > 0 else None
    desc = f"{cfg.coder} q{cfg.quality} {cfg.split}" + (f" part {part}/{parts}" if parts > 1 else "")
    bar = tqdm(total=sum(len(groups[j]) for j in todo) * cfg.variants, unit="img", desc=desc,
               disable=not progress, smoothing=0.1)
    done = None
    try:
        if cfg.encoders > 1:
            setup = (cfg, coder.weights["sha256"], teacher.weights["sha256"] if teacher else None, prof is not None)
            pieces = _pieces(todo, groups, cfg.encoders, cfg.batch_size)
            # The parent's torch thread count: it changes the coder's float bits (docs/benchmarks.md).
            done = run_in_processes(_encode_piece, _encoder_process, setup, [items for _, items in pieces],
                                    cfg.encoders, torch.get_num_threads(), bar.update)
            for j in todo:
                records[j] = _commit_pieces(out, cfg, j, groups[j], done, sum(g == j for g, _ in pieces), bar,
                                            rejects_so_far, len(source.items), prof)
                rejects_so_far += len(records[j]["rejects"])
        else:
            encoder = Encoder(coder, prof, analysis_device=_analysis_device(cfg))
            run_teacher = _device_teacher(cfg, teacher)
            ahead = 4 * cfg.workers + cfg.batch_size
            stream = prepared_stream((it for j in todo for it in groups[j]), cfg, pool, ahead, prof)
            for j in todo:
                prepared = list(itertools.islice(stream, len(groups[j])))
                records[j] = _write_group(out, cfg, j, prepared, encoder, bar, rejects_so_far, len(source.items),
                                          run_teacher, prof)
                rejects_so_far += len(records[j]["rejects"])
    finally:
        bar.close()
        if done is not None:
            done.close()  # terminates the encoder processes if we stopped early
        if pool is not None:
            pool.terminate()
    write_json_atomic(out / part_file(cfg.split, part, parts), {
        "split": cfg.split, "part": part, "parts": parts, "groups": len(groups),
        "images": len(source.items), "listing": listing_digest(source.items),
        "classes": source.classes, "backend": cfg.format,
        "config": cfg.identity(), "coder": _coder_entry(cfg, coder),
        "latent": teacher_entry(teacher, _latent_entry(cfg, coder, [records[j] for j in mine])),
        "created_by": {**_versions(), **device_entry(cfg.device)}, "records": [records[j] for j in mine],
    })
    return seal(out, splits=[cfg.split]) if parts == 1 else None


def _encoder_process(cfg: BuildConfig, weights_sha256: str, teacher_sha256: str | None, profile: bool):
    """Setup of one --encoders process (parallel.py): load the parent's coder and teacher, checked by sha256."""
    coder = load_coder(cfg.coder, cfg.quality, cfg.weights, seed=cfg.seed)
    teacher = load_teacher(cfg.teacher, cfg.teacher_weights, cfg.teacher_strides, cfg.teacher_layers,
                           cfg.teacher_dtype, seed=cfg.seed) if cfg.teacher else None
    if coder.weights["sha256"] != weights_sha256 or (teacher and teacher.weights["sha256"] != teacher_sha256):
        raise WeightsError(f"The weights of {cfg.coder} (or the teacher) changed on disk while the build "
                           "started its encoder processes: rerun the command (it resumes)")
    return cfg, coder, _device_teacher(cfg, teacher), profile


def _device_teacher(cfg: BuildConfig, teacher):
    """The teacher as the build runs it: itself on the CPU, or a copy batched on the build's GPU."""
    if teacher is None or _analysis_device(cfg) is None:
        return teacher
    from .device_teacher import BatchedTeacher

    return BatchedTeacher(load_teacher(cfg.teacher, cfg.teacher_weights, cfg.teacher_strides, cfg.teacher_layers,
                                       cfg.teacher_dtype, seed=cfg.seed), _analysis_device(cfg))


#: Pieces per encoder process when groups are cut: enough that processes finishing at different
#: times stay busy.
PIECES_PER_ENCODER = 4


def _pieces(todo: list, groups: list, encoders: int, batch_size: int = 1) -> list[tuple[int, list]]:
    """(group, items) work units for --encoders: whole groups, or equal runs of a group's items
    when there are fewer groups to build than processes.

    A group is the unit of commit, not of work: with fewer groups than processes
    (a build of 512 images at --shard-size 1000 is one group) whole groups would
    leave all processes but one idle. Pieces are encoded in the processes and
    written by the parent in source order, so the shards do not change. A piece
    holds a multiple of `batch_size` images, so (without rejects) its batches are
    the ones a single process makes.
    """
    if len(todo) >= encoders:
        return [(j, groups[j]) for j in todo]
    total = sum(len(groups[j]) for j in todo)
    size = batch_size * -(-total // (PIECES_PER_ENCODER * encoders * batch_size))
    return [(j, groups[j][i:i + size]) for j in todo for i in range(0, len(groups[j]), size)]


def _encode_piece(state, items, bar):
    """One piece in an encoder process: decode, augment, encode, serialize; (samples, rejects, timings)."""
    cfg, coder, teacher, profile = state
    prof = Profiler(enabled=profile)
    prepared = list(prepared_stream(items, cfg, None, 0, prof))
    ok = [p for p in prepared if not p.reject]
    samples = list(_encode_samples(cfg, ok, Encoder(coder, prof, analysis_device=_analysis_device(cfg)), bar,
                                   teacher, prof))
    return samples, _rejects(prepared), prof.snapshot()


def _commit_pieces(out, cfg, group, items, done, count, bar, rejects_before, total_items, prof) -> dict:
    """Write the next `count` pieces of `done` (group `group`, in source order) and commit the group."""
    rejects = []
    sources = [fingerprint(it) for it in items]  # before its pieces are consumed: a later change shows on rerun

    def samples():
        for _ in range(count):
            piece, piece_rejects, timings = next(done)
            if prof is not None:
                prof.merge(timings, where="encoders")
            rejects.extend(piece_rejects)
            if rejects_before + len(rejects) > cfg.max_rejects:  # before the commit: nothing is claimed
                raise _too_many_rejects(rejects_before + len(rejects), rejects, cfg)
            yield from piece

    record = _commit_group(out, cfg, group, [it.key for it in items], rejects, samples(), total_items, prof,
                           sources)
    bar.update(len(rejects) * cfg.variants)
    return record


def _analysis_device(cfg: BuildConfig):
    """Where the encoder runs g_a and h_a: None (per image, on the CPU) or the build's GPU."""
    return None if cfg.device == "cpu" else cfg.device


def _too_many_rejects(count: int, rejects: list, cfg: BuildConfig) -> InputError:
    listing = "\n".join(f"  {r['source']}: {r['reason']}" for r in rejects[:10])
    return InputError(
        f"{count} images rejected, more than --max-rejects {cfg.max_rejects}. "
        f"Latest:\n{listing}\nFix or remove those files, or raise --max-rejects; "
        f"rerunning the command resumes where it stopped."
    )


def _rejects(prepared) -> list[dict]:
    return [{"source": p.item.relpath, "key": p.item.key, "reason": p.reject} for p in prepared if p.reject]


def _write_group(out, cfg, group, prepared, encoder, bar, rejects_before, total_items, teacher=None,
                 prof=None) -> dict:
    rejects = _rejects(prepared)
    if rejects_before + len(rejects) > cfg.max_rejects:
        raise _too_many_rejects(rejects_before + len(rejects), rejects, cfg)
    ok = [p for p in prepared if not p.reject]
    samples = _encode_samples(cfg, ok, encoder, bar, teacher, prof)
    record = _commit_group(out, cfg, group, [p.item.key for p in prepared], rejects, samples, total_items, prof,
                           [p.fingerprint for p in prepared])
    bar.update(len(rejects) * cfg.variants)
    return record


def _encode_samples(cfg, ok: list, encoder, bar, teacher=None, prof=None):
    """(variant, files, bits, (h, w)) of every crop of the prepared images `ok`, image-major."""
    batched = hasattr(teacher, "batch_files")   # --device cuda: device_teacher.BatchedTeacher
    for chunk in batches(ok, cfg.batch_size):
        x, pad = to_input([p.crops[v][1] for p, v in chunk])
        if batched:
            with _stage(prof, "teacher"):
                teacher_files = teacher.batch_files([p.crops[v][1] for p, v in chunk])
        for i, ((p, v), enc) in enumerate(zip(chunk, encoder.encode(x))):
            with _stage(prof, "serialize"):
                files = sample_files(p, v, enc, pad, cfg)
            if batched:
                files.update(teacher_files[i])
            elif teacher is not None:  # one image per forward: batched convs change bits with batch size
                with _stage(prof, "teacher"):
                    files.update(teacher.sample_files(p.crops[v][1]))
            yield v, files, enc.bits(), p.crops[v][1].shape[:2]
        bar.update(len(chunk))


def _commit_group(out, cfg, group, item_keys: list, rejects: list, samples, total_items, prof=None,
                  sources: list | None = None) -> dict:
    """Write `samples` ((variant, files, bits, (h, w)) in source order) as group `group`, then commit it.
    `rejects` is read at the commit (it may fill while `samples` runs); `sources` are the items'
    fingerprints (datasets.fingerprint), which a rerun compares with the dataset."""
    stats = {"samples": 0, "bits": 0, "pixels": 0, "field_bytes": {}}
    layout = {"item_keys": item_keys, "first_item": group * cfg.shard_size,
              "total_items": total_items, "shard_size": cfg.shard_size}
    with WRITERS[cfg.format](out, cfg.split, group, cfg.variants, layout) as writer:
        for v, files, bits, (h, w) in samples:
            with _stage(prof, "write"):
                writer.write(v, files)
            stats["samples"] += 1
            stats["bits"] += bits
            stats["pixels"] += h * w
            stats.setdefault("image_size", [h, w])  # seg-val: the split's size comes from the images
            for ext, data in files.items():
                if ext != "__key__":
                    stats["field_bytes"][ext] = stats["field_bytes"].get(ext, 0) + len(data)
        writer.extra = {"images": len(item_keys), "items": item_keys, "rejects": rejects, "stats": stats,
                        "sources": sources}
        committing = time.perf_counter()
    if prof is not None:  # the commit (fsync, rename, record): write time, not another call
        prof.add("write", time.perf_counter() - committing, calls=0)
    return _read_record(out, cfg.split, group)


def _read_record(out: Path, split: str, group: int) -> dict | None:
    """A group's commit record, if the group is fully committed."""
    path = out / commit_record_name(split, group)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    for shard in (f for s in record["shards"] for f in s.get("files", [s])):  # zarr: a unit's chunk files
        p = out / shard["path"]
        if not p.is_file() or p.stat().st_size != shard["bytes"]:
            return None  # a shard was lost or replaced since: rebuild the group
    return record


@contextlib.contextmanager
def _build_lock(out: Path, split: str, part: int, parts: int):
    """Hold an exclusive lock on this (split, part) of the store for the whole build."""
    path = out / PARTS_DIR / f".lock-{split}-part-{part:04d}-of-{parts:04d}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"Another build of split {split!r}" + (f" part {part}/{parts}" if parts > 1 else "")
                              + f" is running into {out} (it holds {path}). Wait for it to finish, or build "
                              "into another --out.") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _check_parts(out: Path, split: str, part: int, parts: int) -> None:
    """Refuse, before any work, a build split into another number of parts than the split's finished parts."""
    try:
        others = sorted({p["parts"] for p in read_parts(out).get(split, {}).values()} - {parts})
    except ValueError:
        return  # a damaged part manifest: seal names it
    if others:
        was = f"{others[0]} parts (--part i/{others[0]})" if others[0] > 1 else "a plain build (no --part)"
        now = f"--part {part}/{parts}" if parts > 1 else "a plain build"
        raise ConfigError(f"{out} split {split!r} was started as {was}; this is {now}. Finish it the way it was "
                          f"started, or delete {out / PARTS_DIR}/{split}-part-*-of-{others[0]:04d}.json to switch "
                          "(committed groups are reused either way).")


def _current_records(out: Path, cfg: BuildConfig, groups: list, mine: list, progress: bool) -> dict:
    """{group: commit record} of this part's groups; None for a group still to (re-)encode.

    A committed group is kept only while its recorded items and source
    fingerprints match today's listing: a file added, removed, renamed or
    edited since puts the groups it touches back on the to-do list, so nothing
    is stored twice or lost, and a fixed reject gets encoded.
    """
    part, parts = cfg.part
    if cfg.format == "zarr":
        _check_zarr_items(out, cfg.split, sum(len(g) for g in groups))
    _drop_groups_past(out, cfg.split, len(groups), part, parts)
    records, changed = {}, []
    for j in mine:
        record = _read_record(out, cfg.split, j)
        why = record and source_changes(groups[j], record.get("items", []), record.get("sources"))
        if why:
            changed.append(f"group {j}: {why}")
            record = None
        records[j] = record
    if changed and progress:
        tqdm.write(f"The dataset changed since these groups were encoded; encoding them again:\n  "
                   + "\n  ".join(changed[:10]) + (f"\n  ... {len(changed) - 10} more" if len(changed) > 10 else ""),
                   file=sys.stderr)
    return records


def _drop_groups_past(out: Path, split: str, count: int, part: int, parts: int) -> None:
    """Remove this part's committed groups at index >= count (the dataset shrank): record first, then files."""
    for path in sorted((out / split).glob("group-*.json")):
        j = int(path.stem.split("-")[1])
        if j < count or j % parts != part:
            continue
        record = json.loads(path.read_text())
        path.unlink()
        for shard in (f for s in record["shards"] for f in s.get("files", [s])):
            (out / shard["path"]).unlink(missing_ok=True)


def _check_zarr_items(out: Path, split: str, count: int) -> None:
    """A Zarr split's arrays are sized by its image count: refuse a dataset that gained or lost images."""
    meta = out / split / "present" / "zarr.json"
    if not meta.is_file():
        return
    try:
        started = json.loads(meta.read_text())["shape"][1]
    except (ValueError, KeyError, IndexError) as exc:
        raise ConfigError(f"{meta} is damaged ({exc}): build into a new --out") from exc
    if started != count:
        raise InputError(f"{out} split {split!r} was started from {started} images; the dataset now lists {count}. "
                         "A Zarr split is sized by its image count: restore the images, or build into a new "
                         "--out (or build --format webdataset, which re-encodes only the changed groups).")


def _check_resume(out: Path, cfg: BuildConfig, weights: dict, teacher=None) -> None:
    """Refuse to continue a build that was started with other arguments."""
    path = out / f"build-{cfg.split}.json"
    current = {"config": cfg.identity(), "weights_sha256": weights["sha256"], "encoder_revision": ENCODER_REVISION,
               "device": cfg.device}
    if teacher is not None:
        current["teacher_sha256"] = teacher.weights["sha256"]
    if path.is_file():
        started = json.loads(path.read_text())
        diffs = [f"--{k.replace('_', '-')}: store has {started['config'].get(k)!r}, command has {v!r}"
                 for k, v in current["config"].items() if started["config"].get(k) != v and k not in RESUME_FREE]
        if started["weights_sha256"] != current["weights_sha256"]:
            diffs.append("coder weights differ (sha256)")
        if started.get("teacher_sha256") != current.get("teacher_sha256"):
            diffs.append("teacher weights differ (sha256)")
        if started.get("encoder_revision", 1) != ENCODER_REVISION:
            diffs.append(f"encoded by encoder revision {started.get('encoder_revision', 1)} (this latentstore: "
                         f"{ENCODER_REVISION}), whose ŷ is not exact: start again in a new --out")
        if started.get("device", "cpu") != cfg.device:  # g_a on another device gives other symbols
            diffs.append(f"--device: store was started on {started.get('device', 'cpu')}, command has "
                         f"{cfg.device} (a store's symbols depend on the device type)")
        if diffs:
            raise ConfigError(f"{out} split {cfg.split!r} was started with other arguments:\n  "
                              + "\n  ".join(diffs) + "\nRepeat the original command, or use a new --out.")
    else:
        write_json_atomic(path, current)


def _versions() -> dict:
    import compressai, webdataset
    return {"latentstore": __version__, "torch": torch.__version__, "compressai": compressai.__version__,
            "numpy": np.__version__, "webdataset": webdataset.__version__,
            "python": platform.python_version(),
            # The coder's convolutions give other float bits at another thread count (docs/benchmarks.md).
            "torch_threads": STORE_THREADS, "encoder_revision": ENCODER_REVISION}


def _coder_entry(cfg: BuildConfig, coder) -> dict:
    return {"name": coder.spec.name, "quality": cfg.quality, "latent_kind": coder.spec.latent_kind,
            "channels": coder.spec.channels[cfg.quality], "weights": coder.weights}


def _latent_entry(cfg: BuildConfig, coder, records: list = ()) -> dict:
    """Latent geometry of this split's (fixed-size) crops; seg-val stores whole images of one size."""
    sizes = {tuple(r["stats"]["image_size"]) for r in records if r and "image_size" in r["stats"]}
    h, w = sizes.pop() if cfg.augment == "seg-val" and len(sizes) == 1 else (cfg.crop, cfg.crop)
    pad = Padding.centered(h, w)
    padded = (h + pad.top + pad.bottom, w + pad.left + pad.right)
    return {"latent_shape": [coder.spec.channels[cfg.quality], padded[0] // 16, padded[1] // 16],
            "valid_region": pad.valid_region(h, w), "padding": pad.as_dict()}
