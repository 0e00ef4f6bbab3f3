"""`latentstore add-teacher`: teacher features for an existing store, without re-encoding.

Each stored sample's crop is replayed from its source image (``meta.json``
``source`` + ``augment``, the dataset root from the split's build config), the
teacher runs on it exactly as in a build with ``--teacher``, and the group is
written again, each Sample with the teacher's fields added. Every other field
serialises to the bytes it had, so a tar store is byte-identical to building with ``--teacher``
from the start (tests/test_teachers.py checks it). A Zarr store gets new
teacher arrays chunked like its existing ones (a build with ``--teacher``
would chunk everything finer, as its samples are bigger), so its samples, not
its files, equal such a build's; the group's other arrays are rewritten with
the bytes they had.

Refusing a changed source. Before a crop feeds the teacher, the store's coder
(loaded as the build loaded it; its weights' sha256 must match the manifest)
runs its analysis transform g_a on the replayed crop. Every coder stores
ŷ = round(y − offset) + offset, so |g_a(crop) − ŷ| ≤ ½ must hold at every latent
element (plus the float16 rounding of a stored ŷ). A replaced, re-encoded or
resized source breaks that at once; a change too small to move any latent
element across a rounding boundary is not detected. ``verify_sources=False``
skips the check (then only the source size is compared), e.g. on a node that
cannot load the coder weights.

Commit order, per group: new shards under temporary names, fsync, rename over
the old ones, then the group record; at the end the part manifests and, last,
manifest.json (through ``seal``). A rerun after a crash skips groups whose
record lists the teacher members, and accepts a shard already rewritten by the
crashed run (its teacher members are recomputed, giving the same bytes).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..build.augment import apply
from ..build.config import BuildConfig
from ..build.encoder import to_input
from ..build.images import RejectedImage, load_rgb
from ..build.resume import build_lock, check_resume
from ..coders.custom import check_same_code
from ..coders.registry import load_coder
from ..errors import ConfigError, InputError, StoreError
from ..store import numerics
from ..store.checksum import audit
from ..store.commit import GroupLayout, rewrite_group
from ..store.format import (
    TEACHER_PREFIX,
    check_recorded_files,
    commit_record_name,
    get_field,
    read_manifest,
    write_json_atomic,
)
from ..store.locks import manifest_lock
from ..store.paths import store_file
from ..store.readers import read_shard
from ..store.sample import Sample, SampleMeta
from ..store.seal import part_file, read_parts, seal
from ..teacher.dtypes import TEACHER_DTYPES, dequantize, quantize, relative_error
from ..teacher.load import TEACHER_ARGS, Teacher, load_teacher, teacher_entry

Y_HAT_SLACK = 1e-3  # float slack of recomputing g_a outside compress() (batched vs not)




def replay_crop(root: Path, meta: SampleMeta, where: str) -> np.ndarray:
    """The stored sample's uint8 crop, cut again from its source image."""
    try:
        img = load_rgb(root / meta.source)
        crop = np.asarray(apply(img, meta.augment), dtype=np.uint8)
    except (RejectedImage, InputError, OSError) as exc:
        raise InputError(f"{where}: cannot replay source {meta.source} ({exc}); the dataset under {root} "
                         f"changed since the build") from exc
    if list(crop.shape[:2]) != list(meta.image_size):
        raise InputError(f"{where}: replayed crop is {list(crop.shape[:2])}, the store has {meta.image_size}")
    return crop


class SourceCheck:
    """|g_a(replayed crop) − stored ŷ| ≤ ½ everywhere, with the store's own coder (module docstring)."""

    def __init__(self, manifest: dict, config: dict):
        coder = load_coder(config["coder"], config["quality"], config["weights"], seed=config["seed"],
                           metric=config.get("metric", "mse"))
        check_same_code(config["coder"], manifest["coder"]["weights"].get("code"))
        if coder.weights["sha256"] != manifest["coder"]["weights"]["sha256"]:
            raise ConfigError("The coder loaded from the build config has other weights (sha256) than the store's; "
                              "pass the weights the store was built with, or --trust-sources to skip the check")
        self.model = coder.model

    @torch.no_grad()
    def __call__(self, crop: np.ndarray, stored: np.ndarray, where: str) -> None:
        x, _ = to_input([crop])
        y = self.model.g_a(x)[0].numpy()
        y_hat = stored.astype(np.float32)
        if y.shape != y_hat.shape:
            raise InputError(f"{where}: replayed crop gives a latent of shape {y.shape}, the store has {y_hat.shape}")
        # A float16 ŷ is the exact one rounded: up to half an ulp (2^-11 relative) more.
        slack = 0.5 + Y_HAT_SLACK + np.abs(y_hat) * (2.0 ** -10 if stored.dtype == np.float16 else 0.0)
        bad = np.abs(y - y_hat) > slack
        if bad.any():
            raise InputError(f"{where}: the replayed crop does not encode to the stored latent ({int(bad.sum())} "
                             f"of {bad.size} elements off by more than half a step): its source image changed "
                             f"since the build. Restore it, or rebuild the store.")


def _teacher_config(identity: dict, store, teacher: str, weights, strides, layers, dtype) -> BuildConfig:
    known = {k: v for k, v in identity.items() if k in BuildConfig.__dataclass_fields__ and k not in TEACHER_ARGS}
    return BuildConfig(**{**known, "out": str(store), "teacher": teacher, "teacher_weights": weights,
                          "teacher_strides": strides, "teacher_layers": layers, "teacher_dtype": dtype}).resolved()


def _fields_of(teacher: Teacher) -> set:
    return {f"{t.field}{s}" for t in teacher.taps for s in ([""] + ([".scale"] if teacher.dtype == "int8" else []))}


def add_teacher(store, teacher: str, weights: str = "pretrained", strides=(8, 16, 32), layers=(),
                dtype: str = "float16", splits=None, verify_sources: bool = True, progress: bool = True) -> dict:
    """Add teacher features to `splits` (default: all) of a finished store; returns the manifest."""
    store = Path(store)
    manifest = read_manifest(store)
    # The teacher maps (and the replay check's g_a) are computed in the store's numerics; the CLI restarts
    # in them.
    numerics.require(numerics.dispatch(manifest["created_by"])["mode"])
    for split in splits or sorted(manifest["splits"]):
        if split not in manifest["splits"]:
            raise ConfigError(f"{store} has no split {split!r}: it holds {', '.join(sorted(manifest['splits']))}")
        old = manifest["splits"][split]["config"]
        cfg = _teacher_config(old, store, teacher, weights, strides, layers, dtype)
        if old.get("teacher") is not None and old != cfg.identity():
            raise ConfigError(f"split {split!r} already holds features of teacher {old['teacher']} "
                              f"({old.get('teacher_dtype')}); build a new store for another teacher")
        loaded = cfg.load_teacher()
        check = SourceCheck(manifest, old) if verify_sources else None
        _check_resume_or_start(store, cfg, manifest, loaded, old)
        _add_to_split(store, split, cfg, loaded, check, progress, manifest["splits"][split]["images_found"])
    return seal(store, splits=list(splits or sorted(manifest["splits"])))


def _check_resume_or_start(store: Path, cfg: BuildConfig, manifest: dict, teacher: Teacher, old: dict) -> None:
    """Record the new build identity (as a build with --teacher would) before touching a shard."""
    path = store / f"build-{cfg.split}.json"
    if path.is_file() and json.loads(path.read_text())["config"] == old:
        path.unlink()  # the plain build's identity: replaced by the one with the teacher, below
    check_resume(store, cfg, manifest["coder"]["weights"], teacher)


def _add_to_split(store: Path, split: str, cfg: BuildConfig, teacher: Teacher, check, progress: bool,
                  total_items: int) -> None:
    parts = read_parts(store).get(split, {})
    if not parts:
        raise StoreError(f"{store} has no part manifests for split {split!r}: rebuild it with this latentstore")
    root = Path(cfg.root)
    wanted = _fields_of(teacher)
    total = sum(r["stats"]["samples"] for p in parts.values() for r in p["records"])
    bar = tqdm(total=total, unit="sample", desc=f"teacher {teacher.name} {split}", disable=not progress)
    try:
        for i, part in sorted(parts.items()):
            with build_lock(store, split, i, part["parts"]):  # seal and readers see the part being rewritten
                _add_to_part(store, split, i, part, cfg, teacher, check, root, wanted, bar, total_items)
    finally:
        bar.close()


def _add_to_part(store, split, i, part, cfg, teacher, check, root, wanted, bar, total_items) -> None:
    records = []
    for old in part["records"]:
        # The group record on disk is newer than the part's copy if a crashed run got that far.
        old = json.loads((store / commit_record_name(split, old["group"])).read_text())
        done = {get_field(f).ext for f in wanted} <= set(old["stats"]["field_bytes"])
        layout = GroupLayout(split, old["group"], len(old["shards"]), tuple(old["items"]), cfg.shard_size,
                             total_items)
        records.append(old if done else _rewrite_group(store, cfg.format, old, layout, teacher, check, root,
                                                       wanted, bar))
        bar.update(old["stats"]["samples"] if done else 0)
    part = {**part, "config": cfg.identity(), "records": records,
            "latent": teacher_entry(teacher, {k: v for k, v in part["latent"].items() if k != "teacher"})}
    with manifest_lock(store):
        write_json_atomic(store / part_file(split, i, part["parts"]), part)


def _rewrite_group(store, backend, record, layout, teacher, check, root, wanted, bar) -> dict:
    # The digests first (rewrite_group reads without them). A tar shard that differs from its record may have
    # been rewritten by a crashed run, and must then hold exactly our teacher fields; a Zarr unit's record lists
    # only its old fields, whose files a rerun rewrites byte for byte, so they must match.
    if backend == "webdataset":
        rewritten = {shard["path"] for shard in record["shards"]
                     if not audit(store_file(store, shard["path"], f"shard {shard['path']}"), shard)}
    else:
        rewritten = set()
        for shard in record["shards"]:
            check_recorded_files(store, shard, "add-teacher")

    def with_teacher(sample: Sample) -> Sample:
        where = f"shard {sample.shard}, key {sample.key}"
        ours = {name for name in sample.fields if name.startswith(TEACHER_PREFIX)}
        if sample.shard in rewritten and ours != wanted:
            raise StoreError(f"{where}: the shard differs from its commit record (checksum) and was not "
                             f"written by an earlier add-teacher run: run `latentstore verify`")
        crop = replay_crop(root, sample.meta, where)
        if check is not None:
            check(crop, sample.fields["y_hat"], where)
        kept = {name: value for name, value in sample.fields.items() if name not in ours}
        bar.update(1)
        return Sample(sample.key, sample.variant, {**kept, **teacher.stored_fields(crop)}, sample.meta)

    return rewrite_group(store, backend, record, store, backend, layout, with_teacher)


def teacher_error(store, samples: int = 8, split: str | None = None) -> dict:
    """Relative L2 error of each storage dtype against the float32 teacher, on the first `samples` samples.

    Needs the teacher and the source images. Also reports how far the STORED
    features are from the live teacher run on the replayed crop, after the
    store's own quantization: 0 on the machine that built the store.
    """
    manifest = read_manifest(store)
    entries = {s: e for s, e in manifest["splits"].items() if e.get("teacher") and (split in (None, s))}
    if not entries:
        raise ConfigError(f"{store} has no teacher features{f' in split {split!r}' if split else ''}")
    out = {}
    for s, entry in sorted(entries.items()):
        fp, cfg = entry["teacher"], entry["config"]
        teacher = load_teacher(fp["name"], cfg["teacher_weights"], fp.get("strides", ()), fp.get("layers", ()),
                               fp["dtype"], seed=cfg["seed"])
        if teacher.weights["sha256"] != fp["weights_sha256"]:
            raise ConfigError(f"split {s!r}: teacher weights {cfg['teacher_weights']!r} load with another sha256 "
                              f"than the store's teacher")
        sq = {d: {t.field: [0.0, 0.0] for t in teacher.taps} for d in TEACHER_DTYPES}
        stored_err = {t.field: 0.0 for t in teacher.taps}
        n = 0
        for shard in entry["shards"]:
            for sample in read_shard(Path(store), manifest["backend"], shard):
                where = f"shard {shard['path']}, key {sample.key}"
                live = teacher.features(replay_crop(Path(cfg["root"]), sample.meta, where))
                for name, x in live.items():
                    for d in TEACHER_DTYPES:
                        e = relative_error(x, d) * float(np.linalg.norm(x))
                        sq[d][name][0] += e * e
                        sq[d][name][1] += float(np.sum(x.astype(np.float64) ** 2))
                    stored = dequantize(sample.fields[name], fp["dtype"], sample.fields.get(f"{name}.scale"))
                    q = quantize(x, fp["dtype"])
                    expected = dequantize(q[""], fp["dtype"], q.get(".scale"))
                    diff = float(np.linalg.norm(stored - expected) / (np.linalg.norm(x) or 1.0))
                    stored_err[name] = max(stored_err[name], diff)
                n += 1
                if n >= samples:
                    break
            if n >= samples:
                break
        out[s] = {"samples": n, "dtype": fp["dtype"],
                  "relative_error": {d: {f: (a / b) ** 0.5 if b else 0.0 for f, (a, b) in per.items()}
                                     for d, per in sq.items()},
                  "stored_vs_live": stored_err}
    return out
