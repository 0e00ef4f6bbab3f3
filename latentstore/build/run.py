"""`latentstore build`: source -> decode + augment -> encode -> shards -> manifest.

The work is split into item groups of ``shard_size`` source images. Group j
becomes one shard per variant, committed atomically with a record of its
shards and rejects (see store/tar/writer.py). Which images land in which
shard is a pure function of the sorted source list, so a rerun of the same
command skips committed groups and produces the rest, and the finished store
does not depend on batch size, worker count or interruptions. The manifest is
written last, only when every group is committed.
"""
from __future__ import annotations

import itertools
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import __version__
from ..errors import ConfigError, InputError, WeightsError
from ..store import numerics
from ..store.commit import GroupCommit, GroupLayout
from ..store.format import ENCODER_REVISION, Padding, write_json_atomic
from ..store.locks import manifest_lock
from ..store.seal import part_file, seal
from ..store.threads import STORE_THREADS
from ..teacher.load import teacher_entry
from .config import BuildConfig, check_device_present, device_entry
from .crops_to_samples import encode_samples
from .generic_encoder import make_encoder
from .pool import run_in_processes
from .prepare import prepared_stream
from .resume import build_lock, check_parts, check_resume, current_records
from .sources import listing_digest, open_source
from .timing import Profiler, stage as _stage

# --------------------------------------------------------------------------- driver

def build(cfg: BuildConfig, progress: bool = True, profiler: Profiler | None = None) -> dict | None:
    """Build (or finish building) one split, or one part of it; returns the manifest once sealed.

    A plain build seals its split into manifest.json at the end. A partitioned
    build (``part=(i, N)``, N > 1) writes its part manifest only: run
    ``latentstore seal`` when every part has finished. Returns None then.
    ``profiler`` (latentstore.build.timing) collects the time per stage, from every process.
    """
    cfg = cfg.resolved()
    numerics.require(cfg.numerics)  # before anything is computed: the CLI reruns the command pinned
    check_device_present(cfg.device)
    out = Path(cfg.out)
    part, parts = cfg.part
    source = open_source(cfg.dataset, cfg.root, cfg.split, limit=cfg.limit, label_file=cfg.label_file)
    if not source.items:
        raise InputError(f"No images found under {cfg.root} for split {cfg.split!r}")
    coder = cfg.load_coder()
    teacher = cfg.load_teacher()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot make --out {out} ({exc.strerror}): give a folder path that can be created") from None
    with build_lock(out, cfg.split, part, parts):
        check_parts(out, cfg.split, part, parts)
        started = check_resume(out, cfg, coder.weights, teacher)
        try:
            return _build_locked(cfg, out, source, coder, teacher, progress, profiler)
        except BaseException:
            # Refused before any group was committed: the record of this start must not bind the corrected command.
            if started and not any((out / cfg.split).glob("group-*.json")):
                (out / f"build-{cfg.split}.json").unlink(missing_ok=True)
            raise


def _build_locked(cfg, out, source, coder, teacher, progress, profiler):
    """The build proper, under the (split, part) lock: encode what is missing or changed, then commit."""
    part, parts = cfg.part
    groups = [source.items[i:i + cfg.shard_size] for i in range(0, len(source.items), cfg.shard_size)]
    mine = list(range(part, len(groups), parts))
    records = current_records(out, cfg, groups, mine, progress)
    todo = [j for j in mine if records[j] is None]

    prof = profiler if profiler is not None and profiler.enabled else None
    desc = f"{cfg.coder} q{cfg.quality} {cfg.split}" + (f" part {part}/{parts}" if parts > 1 else "")
    bar = tqdm(total=sum(len(groups[j]) for j in todo) * cfg.variants, unit="img", desc=desc,
               disable=not progress, smoothing=0.1)
    done = stream = None
    committer = _Committer(out, cfg, len(source.items), bar, prof,
                           rejects=sum(len(rec["rejects"]) for rec in records.values() if rec))
    try:
        if cfg.encoders > 1:
            setup = (cfg, coder.weights["sha256"], teacher.weights["sha256"] if teacher else None, prof is not None)
            pieces = _pieces(todo, groups, cfg.encoders, cfg.batch_size)
            done = run_in_processes(_encode_piece, _encoder_process, setup, [items for _, items in pieces],
                                    cfg.encoders, bar.update)
            for j in todo:
                records[j] = _commit_pieces(committer, j, groups[j], done, sum(g == j for g, _ in pieces))
        else:
            encoder = make_encoder(coder, prof, analysis_device=_analysis_device(cfg))
            run_teacher = _device_teacher(cfg, teacher)
            ahead = 4 * cfg.workers + cfg.batch_size
            stream = prepared_stream([it for j in todo for it in groups[j]], cfg, ahead, prof)
            for j in todo:
                prepared = list(itertools.islice(stream, len(groups[j])))
                rejects = committer.add_rejects(_rejects(prepared))
                samples = encode_samples(cfg, [p for p in prepared if not p.reject], encoder, bar, run_teacher, prof)
                records[j] = committer.commit(j, [p.item.key for p in prepared], samples, rejects,
                                              [p.fingerprint for p in prepared])
    finally:
        bar.close()
        if done is not None:
            done.close()  # terminates the encoder processes if we stopped early
        if stream is not None:
            stream.close()  # stops the decode processes if we stopped early
    with manifest_lock(out):
        return _write_part(cfg, out, source, coder, teacher, [records[j] for j in mine], len(groups))


def _write_part(cfg, out, source, coder, teacher, records: list, groups: int):
    """Write this part's manifest; a plain build seals its split (under the manifest lock: the caller's)."""
    part, parts = cfg.part
    write_json_atomic(out / part_file(cfg.split, part, parts), {
        "split": cfg.split, "part": part, "parts": parts, "groups": groups,
        "images": len(source.items), "listing": listing_digest(source.items),
        "classes": source.classes, "backend": cfg.format,
        "config": cfg.identity(), "coder": _coder_entry(cfg, coder),
        "latent": teacher_entry(teacher, _latent_entry(cfg, coder, records)),
        "created_by": {**_versions(), **device_entry(cfg.device), "numerics": numerics.describe(cfg.numerics)},
        "records": records,
    })
    return seal(out, splits=[cfg.split], building=(cfg.split, part, parts)) if parts == 1 else None


def _encoder_process(cfg: BuildConfig, weights_sha256: str, teacher_sha256: str | None, profile: bool):
    """Setup of one --encoders process (build/pool.py): load the parent's coder and teacher, checked by sha256."""
    coder = cfg.load_coder()
    teacher = cfg.load_teacher()
    if coder.weights["sha256"] != weights_sha256 or (teacher and teacher.weights["sha256"] != teacher_sha256):
        raise WeightsError(f"The weights of {cfg.coder} (or the teacher) changed on disk while the build "
                           "started its encoder processes: rerun the command (it resumes)")
    return cfg, coder, _device_teacher(cfg, teacher), profile


def _device_teacher(cfg: BuildConfig, teacher):
    """The teacher as the build runs it: itself on the CPU, or a copy batched on the build's GPU."""
    if teacher is None or _analysis_device(cfg) is None:
        return teacher
    from ..teacher.device import BatchedTeacher

    return BatchedTeacher(cfg.load_teacher(), _analysis_device(cfg))  # a copy of its own: moved to the GPU


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
    """One piece in an encoder process: decode, augment, encode; (samples, rejects, the items' source
    fingerprints, timings)."""
    cfg, coder, teacher, profile = state
    prof = Profiler(enabled=profile)
    prepared = list(prepared_stream(items, cfg, 0, prof))
    ok = [p for p in prepared if not p.reject]
    samples = list(encode_samples(cfg, ok, make_encoder(coder, prof, analysis_device=_analysis_device(cfg)), bar,
                                   teacher, prof))
    return samples, _rejects(prepared), [p.fingerprint for p in prepared], prof.snapshot()


def _commit_pieces(committer: "_Committer", group: int, items: list, done, count: int) -> dict:
    """Write the next `count` pieces of `done` (group `group`, in source order) and commit the group."""
    rejects, sources = [], []   # filled as the pieces come, read at the commit

    def samples():
        for _ in range(count):
            piece, piece_rejects, piece_sources, timings = next(done)
            if committer.prof is not None:
                committer.prof.merge(timings, where="encoders")
            rejects.extend(committer.add_rejects(piece_rejects))  # raises before the commit: nothing is claimed
            sources.extend(piece_sources)   # taken in the encoder process before decoding, as in one process
            yield from piece

    return committer.commit(group, [it.key for it in items], samples(), rejects, sources)


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


class _Committer:
    """Commits a build's item groups, and counts its rejects against --max-rejects as they come."""

    def __init__(self, out: Path, cfg: BuildConfig, total_items: int, bar, prof, rejects: int):
        self.out, self.cfg, self.total_items, self.bar, self.prof = out, cfg, total_items, bar, prof
        self.rejects = rejects  # of the whole build so far, committed groups included

    def add_rejects(self, new: list) -> list:
        """Count `new` rejects; past --max-rejects, raise (before the group's commit: nothing is claimed)."""
        self.rejects += len(new)
        if self.rejects > self.cfg.max_rejects:
            raise _too_many_rejects(self.rejects, new, self.cfg)
        self.bar.update(len(new) * self.cfg.variants)
        return new

    def commit(self, group: int, item_keys: list, samples, rejects: list, sources: list) -> dict:
        """Write `samples` (in source order) as group `group` and commit it with `rejects` and the items'
        `sources` fingerprints (datasets.fingerprint, which a rerun compares with the dataset), both
        read at the commit (the --encoders path fills them while `samples` runs)."""
        cfg = self.cfg
        layout = GroupLayout(cfg.split, group, cfg.variants, tuple(item_keys), cfg.shard_size, self.total_items)
        with GroupCommit(self.out, cfg.format, layout) as writer:
            for sample in samples:
                with _stage(self.prof, "write"):
                    writer.write(sample)
            committing = time.perf_counter()
            record = writer.commit(rejects, sources)
        if self.prof is not None:  # the commit (fsync, rename, record): write time, not another call
            self.prof.add("write", time.perf_counter() - committing, calls=0)
        return record


def _versions() -> dict:
    import compressai
    import webdataset
    return {"latentstore": __version__, "torch": torch.__version__, "compressai": compressai.__version__,
            "numpy": np.__version__, "webdataset": webdataset.__version__,
            "python": platform.python_version(),
            # The coder's convolutions give other float bits at another thread count (docs/benchmarks.md).
            "torch_threads": STORE_THREADS, "encoder_revision": ENCODER_REVISION}


def _coder_entry(cfg: BuildConfig, coder) -> dict:
    entry = {"name": coder.spec.name, "quality": cfg.quality, "latent_kind": coder.spec.latent_kind,
             "channels": coder.channels, "weights": coder.weights}
    if coder.spec.path == "generic":  # the default is not recorded: a coder entry without "path" is single-pass
        entry["path"] = "generic"
    return entry


def _latent_entry(cfg: BuildConfig, coder, records: list = ()) -> dict:
    """Latent geometry of this split's (fixed-size) crops; seg-val stores whole images of one size."""
    sizes = {tuple(r["stats"]["image_size"]) for r in records if r and "image_size" in r["stats"]}
    h, w = sizes.pop() if cfg.augment == "seg-val" and len(sizes) == 1 else (cfg.crop, cfg.crop)
    pad = Padding.centered(h, w)
    padded = (h + pad.top + pad.bottom, w + pad.left + pad.right)
    return {"latent_shape": [coder.channels, padded[0] // 16, padded[1] // 16],
            "valid_region": pad.valid_region(h, w), "padding": pad.as_dict()}
