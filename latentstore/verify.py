"""`latentstore verify`: check a store against its manifest, and optionally against CompressAI.

Checks every shard's size, sha256 and sample count, that every sample decodes
and has every declared field with the declared latent shape, that keys are
unique, and that no stray or temporary file sits among the shards. With
``decode=N`` it decodes N random samples from their bitstrings with
CompressAI's ``decompress()`` and compares ŷ. Every problem names the shard
(and key); all problems are collected, not just the first.
"""
from __future__ import annotations

import bisect
import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .coders import load_coder_from_manifest
from .encode import EncodedImage, decode_y_hat
from .errors import LatentstoreError
from .format import file_sha256, read_manifest
from .store import SOURCES


@dataclass
class Report:
    shards: int = 0
    samples: int = 0
    decoded: int = 0
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)   # what was not checked, and why

    @property
    def ok(self) -> bool:
        return not self.problems


def _declared_fields(manifest: dict, split: dict) -> set:
    fields = {"y_hat", "symbols", "y_string", "label", "meta", *split["config"]["fields"]}
    if manifest["coder"]["name"] != "bmshj2018-factorized":
        fields.add("z_string")
    return fields


def _shard_file_ok(store: Path, shard: dict, report: Report) -> bool:
    """A tar shard exists with the recorded size and sha256."""
    name, path = shard["path"], store / shard["path"]
    if not path.is_file():
        report.problems.append(f"shard {name}: missing")
        return False
    if path.stat().st_size != shard["bytes"] or file_sha256(path) != shard["sha256"]:
        report.problems.append(f"shard {name}: sha256 or size differs from the manifest (damaged or replaced)")
        return False
    return True


def _check_samples(samples, name: str, declared: set, latent_shape: list, seen: dict, report: Report,
                   keep: set) -> list:
    """Check every sample of one shard (or Zarr unit); returns [(shard, key, sample)] for indexes in `keep`."""
    kept = []
    try:
        for i, s in enumerate(samples):
            key = s["__key__"]
            missing = sorted(declared - s.keys())
            if missing:
                report.problems.append(f"shard {name}, key {key}: missing field(s) {', '.join(missing)}")
            if key in seen:
                report.problems.append(f"shard {name}, key {key}: duplicate key (also in {seen[key]})")
            seen[key] = name
            if "y_hat" in s and list(s["y_hat"].shape) != latent_shape:
                report.problems.append(f"shard {name}, key {key}: y_hat shape {list(s['y_hat'].shape)} "
                                       f"!= manifest latent_shape {latent_shape}")
            if i in keep:
                kept.append((name, key, s))
            report.samples += 1
    except LatentstoreError as exc:
        report.problems.append(str(exc))
    return kept


def _check_decode(coder, name: str, key: str, s: dict) -> str | None:
    meta = s["meta"]
    enc = EncodedImage(symbols=None, y_hat=None, y_string=s["y_string"], z_string=s.get("z_string"),
                       z_symbols=None, means=None, scales=None, y_shape=tuple(meta["y_shape"]),
                       z_shape=tuple(meta["z_shape"]) if meta["z_shape"] else None)
    decoded = decode_y_hat(coder, enc).astype(s["y_hat"].dtype)
    if not np.array_equal(decoded, s["y_hat"]):
        diff = np.abs(decoded.astype(np.float64) - s["y_hat"].astype(np.float64)).max()
        return f"shard {name}, key {key}: CompressAI decodes a different ŷ from the stored strings (max |Δ| {diff:g})"
    return None


def _stray_files(store: Path, manifest: dict) -> list:
    known = {s["path"] for split in manifest["splits"].values() for s in split["shards"]}
    problems = []
    for split in manifest["splits"]:
        folder = store / split
        for p in sorted(folder.iterdir()) if folder.is_dir() else []:
            rel = p.relative_to(store).as_posix()
            if ".tmp-" in p.name:
                problems.append(f"{rel}: leftover temporary file of an interrupted write "
                                f"(delete it, or rerun the build command to finish)")
            elif p.suffix == ".tar" and rel not in known:
                problems.append(f"{rel}: shard not listed in the manifest")
    return problems


def _check_sources(store: Path, manifest: dict, root, report: Report) -> None:
    """Each split's group records against today's listing of its dataset (items and file fingerprints)."""
    from .datasets import open_source, source_changes

    for split_name, split in sorted(manifest["splits"].items()):
        cfg = split["config"]
        where = Path(root) if root is not None else Path(cfg["root"])
        if not where.is_dir():
            if root is not None:
                report.problems.append(f"--root {where} is not a directory")
            else:
                report.notes.append(f"split {split_name!r}: its dataset {where} is not here, so the store was not "
                                    "compared with its source (pass --root where the dataset is now)")
            continue
        try:
            items = open_source(cfg["dataset"], where, cfg["split"], limit=cfg.get("limit"),
                                label_file=cfg.get("label_file")).items
        except LatentstoreError as exc:
            report.problems.append(f"split {split_name!r}: cannot list its dataset at {where} ({exc})")
            continue
        stale = f"(rerun the build command: it re-encodes the changed groups)"
        if len(items) != split["images_found"]:
            report.problems.append(f"split {split_name!r}: {where} now lists {len(items)} images, the store was "
                                   f"built from {split['images_found']} {stale}")
        size = cfg["shard_size"]
        for j in range(0, -(-len(items) // size)):
            path = store / split_name / f"group-{j:06d}.json"
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                report.problems.append(f"split {split_name!r}: group record {path.name} is missing or damaged")
                continue
            why = source_changes(items[j * size:(j + 1) * size], record.get("items", []), record.get("sources"))
            if why:
                report.problems.append(f"split {split_name!r}, group {j}: no longer matches {where}: {why} {stale}")


def verify(store, decode: int = 0, seed: int = 0, weights: str | None = None, progress: bool = False,
           root=None, sources: bool = True) -> Report:
    """Check `store` completely; `decode` random samples are also decoded by CompressAI.

    With `sources` (default), the group records are compared with the dataset
    they were built from (at `root`, default: the root the manifest records),
    so a store that no longer matches its source is reported.
    """
    store = Path(store)
    report = Report()
    try:
        manifest = read_manifest(store)
    except LatentstoreError as exc:
        report.problems.append(str(exc))
        return report
    backend = manifest["backend"]
    if backend == "zarr":  # chunk files against the commit records (readers/zarr.py)
        from .readers.zarr import verify as verify_zarr
        report.problems += verify_zarr(store)
    else:
        report.problems += _stray_files(store, manifest)
    damaged = list(report.problems)
    if sources:
        _check_sources(store, manifest, root, report)
    read = SOURCES[backend]
    # Pick the samples to decode up front, so only those are held in memory.
    shards = [s for split in manifest["splits"].values() for s in split["shards"]]
    starts = list(itertools.accumulate((s["samples"] for s in shards), initial=0))
    chosen = set()
    for g in random.Random(seed).sample(range(starts[-1]), min(decode, starts[-1])):
        k = bisect.bisect_right(starts, g) - 1
        chosen.add((shards[k]["path"], g - starts[k]))
    candidates = []
    for split_name, split in sorted(manifest["splits"].items()):
        declared, seen = _declared_fields(manifest, split), {}
        for shard in tqdm(split["shards"], desc=f"verify {split_name}", unit="shard", disable=not progress):
            report.shards += 1
            if backend == "webdataset" and not _shard_file_ok(store, shard, report):
                continue
            if backend == "zarr" and any(shard["path"] in problem for problem in damaged):
                continue  # already reported by the chunk file check
            keep = {i for path, i in chosen if path == shard["path"]}
            samples = read(store, shard, None, False)
            candidates += _check_samples(samples, shard["path"], declared, split["latent_shape"], seen, report, keep)
    if candidates:
        coder = load_coder_from_manifest(manifest["coder"], weights)
        for name, key, s in tqdm(candidates, desc="decode", unit="sample", disable=not progress):
            problem = _check_decode(coder, name, key, s)
            if problem:
                report.problems.append(problem)
            report.decoded += 1
    return report
