"""What a rerun of a build may reuse, and what it must refuse.

A build is resumable (docs/reliability.md §3): a rerun of the same command
keeps every committed group whose recorded items and source fingerprints still
match the dataset, re-encodes the rest, and refuses to continue a store started
with other arguments, weights, encoder revision or device, or split into
another number of parts. One build at a time holds each (split, part).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..errors import ConfigError, InputError
from ..store.commit import read_record
from ..store.format import ENCODER_REVISION, ZARR_GROWTH_ADVICE, recorded_files, write_json_atomic
from ..store.locks import part_lock_path
from ..store.seal import PARTS_DIR, RESUME_FREE, read_parts
from ..teacher.info import teacher_flags
from .config import BuildConfig
from .sources import source_changes


@contextlib.contextmanager
def build_lock(out: Path, split: str, part: int, parts: int):
    """Hold an exclusive lock on this (split, part) of the store for the whole build."""
    path = part_lock_path(out, split, part, parts)
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


def check_parts(out: Path, split: str, part: int, parts: int) -> None:
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


def current_records(out: Path, cfg: BuildConfig, groups: list, mine: list, progress: bool) -> dict:
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
        record = read_record(out, cfg.split, j)
        why = record and source_changes(groups[j], record.get("items", []), record.get("sources"))
        if why:
            changed.append(f"group {j}: {why}")
            record = None
        records[j] = record
    if changed and progress:
        tqdm.write("The dataset changed since these groups were encoded; encoding them again:\n  "
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
        for f in recorded_files(record):
            (out / f["path"]).unlink(missing_ok=True)


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
                         f"{ZARR_GROWTH_ADVICE}.")


def _teacher_diffs(started: dict, current: dict, cfg: BuildConfig) -> list:
    """What differs about the teacher: maps the command does not ask for (naming the flags to add),
    or, with the same teacher arguments, other weights. Argument changes are listed with the others."""
    flags = teacher_flags(started["config"])
    if flags and cfg.teacher is None:
        return [f"the store holds teacher maps (from add-teacher or --teacher): add {flags}"]
    if not flags or cfg.teacher is None:
        return []   # a teacher the store was started without: the --teacher lines above name it
    same_args = all(started["config"].get(k) == v for k, v in current["config"].items() if k.startswith("teacher"))
    if same_args and started.get("teacher_sha256") != current.get("teacher_sha256"):
        return ["teacher weights differ (sha256): the file behind --teacher-weights changed since the build"]
    return []


def check_resume(out: Path, cfg: BuildConfig, weights: dict, teacher=None) -> bool:
    """Refuse to continue a build that was started with other arguments; True when this call started it
    (wrote ``build-<split>.json``)."""
    path = out / f"build-{cfg.split}.json"
    current = {"config": cfg.identity(), "weights_sha256": weights["sha256"], "encoder_revision": ENCODER_REVISION,
               "device": cfg.device}
    if teacher is not None:
        current["teacher_sha256"] = teacher.weights["sha256"]
    if "code" in weights:  # a custom coder (coders/custom.py): its module's source is part of it
        current["code_sha256"] = weights["code"]["sha256"]
    if path.is_file():
        started = json.loads(path.read_text())
        diffs = [f"--{k.replace('_', '-')}: store has {started['config'].get(k)!r}, command has {v!r}"
                 for k, v in current["config"].items() if started["config"].get(k) != v and k not in RESUME_FREE]
        if started["weights_sha256"] != current["weights_sha256"]:
            diffs.append("coder weights differ (sha256)")
        if started.get("code_sha256") != current.get("code_sha256"):
            diffs.append(f"coder source {weights.get('code', {}).get('file', '')} differs (sha256)")
        diffs += _teacher_diffs(started, current, cfg)
        if started.get("encoder_revision") != ENCODER_REVISION:
            diffs.append(f"encoded by encoder revision {started.get('encoder_revision')} (this latentstore: "
                         f"{ENCODER_REVISION}), which stores another ŷ: start again in a new --out")
        if started.get("device", "cpu") != cfg.device:  # g_a on another device gives other symbols
            diffs.append(f"--device: store was started on {started.get('device', 'cpu')}, command has "
                         f"{cfg.device} (a store's symbols depend on the device type)")
        if diffs:
            raise ConfigError(f"{out} split {cfg.split!r} was started with other arguments:\n  "
                              + "\n  ".join(diffs) + "\nRepeat the original command, or use a new --out.")
        return False
    write_json_atomic(path, current)
    return True
