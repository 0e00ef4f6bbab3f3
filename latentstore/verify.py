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
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .coders import load_coder_from_manifest
from .encode import STORE_THREADS, EncodedImage, decode_y_hat
from .errors import LatentstoreError
from .format import ENCODER_REVISION, file_sha256, read_manifest
from .store import SOURCES


@dataclass
class Report:
    shards: int = 0
    samples: int = 0
    decoded: int = 0
    problems: list = field(default_factory=list)

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


def _check_decode(coder, name: str, key: str, s: dict, created_by: dict) -> str | None:
    meta = s["meta"]
    enc = EncodedImage(symbols=None, y_hat=None, y_string=s["y_string"], z_string=s.get("z_string"),
                       z_symbols=None, means=None, scales=None, y_shape=tuple(meta["y_shape"]),
                       z_shape=tuple(meta["z_shape"]) if meta["z_shape"] else None)
    decoded = decode_y_hat(coder, enc, threads=created_by.get("torch_threads", STORE_THREADS))
    if np.array_equal(decoded.astype(s["y_hat"].dtype), s["y_hat"]):
        return None
    diff = np.abs(decoded.astype(np.float64) - s["y_hat"].astype(np.float64)).max()
    problem = f"shard {name}, key {key}: CompressAI decodes a different ŷ from the stored strings (max |Δ| {diff:g})"
    revision = created_by.get("encoder_revision", 1)
    if revision < ENCODER_REVISION:
        return (f"{problem}. The store was built by encoder revision {revision} (latentstore "
                f"{created_by.get('latentstore', '?')}), whose ŷ can be an ulp off CompressAI's: rebuild it "
                f"with the same command into a new --out")
    return (f"{problem}. Decode on the machine type and torch {created_by.get('torch', '?')} the store was "
            f"built with (docs/FORMAT.md, \"What is exact\"); if it fails there too, rebuild")


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


def verify(store, decode: int = 0, seed: int = 0, weights: str | None = None, progress: bool = False) -> Report:
    """Check `store` completely; `decode` random samples (all if more) are also decoded by CompressAI,
    at the torch thread count the store was built at."""
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
            problem = _check_decode(coder, name, key, s, manifest["created_by"])
            if problem:
                report.problems.append(problem)
            report.decoded += 1
    return report
