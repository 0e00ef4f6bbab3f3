"""`latentstore verify`: check a store against its manifest, and optionally against CompressAI.

Checks every shard's size, sha256 and sample count (the digests in one pass
over each file; its samples are then read without the reader's own digest
check), that every sample decodes and has every declared field with the
declared latent shape, that keys are unique, and that no stray or temporary
file sits among the shards. With ``decode=N`` it decodes N random samples
from their bitstrings with CompressAI's ``decompress()`` and compares ŷ. Every
problem names the shard (and key); all problems are collected, not just the
first.
"""
from __future__ import annotations

import bisect
import itertools
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import LatentstoreError, StoreError
from ..store import numerics
from ..store.checksum import file_problem
from ..store.format import ENCODER_REVISION, ZARR_GROWTH_ADVICE, read_manifest
from ..store.paths import store_file
from ..store.readers import read_shard
from ..store.sample import Sample
from ..teacher.info import teacher_flags


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
    fields = {"y_hat", "y_string", "label", "meta", *split["config"]["fields"]}
    if manifest["coder"].get("path") != "generic":  # the generic path keeps every stream in y_string
        fields.add("symbols")
        if manifest["coder"]["name"] not in ("bmshj2018-factorized", "bmshj2018-factorized-relu"):
            fields.add("z_string")
    return fields


def _shard_file_ok(store: Path, shard: dict, report: Report) -> bool:
    """A tar shard and its sample index (where the store has them) exist with their recorded sizes and digests."""
    for f in (shard, shard.get("index")):
        try:
            problem = f and file_problem(store_file(store, f["path"], f"shard {shard['path']}"), f, digests=True)
        except StoreError as exc:  # a path out of the store: named, never followed
            report.problems.append(str(exc))
            return False
        if problem:
            name = "" if f is shard else f"its index {f['path']} "
            report.problems.append(f"shard {shard['path']}: {name}{problem} (damaged or replaced)")
            return False
    if shard.get("index"):  # the index must describe the tar it indexes: its member headers, in order
        from ..store.tar.index import INDEX_COLUMNS
        from ..store.tar.reader import build_index

        try:
            index = json.loads(store_file(store, shard["index"]["path"], f"shard {shard['path']}").read_text())
            actual = build_index(store_file(store, shard["path"], f"shard {shard['path']}"), shard["path"])
        except (LatentstoreError, OSError, ValueError) as exc:
            report.problems.append(f"shard {shard['path']}: its index cannot be compared with the tar ({exc})")
            return False
        if not isinstance(index, dict) or any(index.get(c) != actual[c] for c in INDEX_COLUMNS):
            report.problems.append(f"shard {shard['path']}: its index {shard['index']['path']} does not match the "
                                   "tar's members (edited?); rebuild the shard (delete its group record, rerun "
                                   "the build command)")
            return False
    return True


def _check_samples(samples, name: str, declared: set, latent_shape: list, seen: dict, report: Report,
                   keep: set) -> list:
    """Check every sample of one shard (or Zarr unit); returns [(shard, key, sample)] for indexes in `keep`."""
    kept = []
    try:
        for i, s in enumerate(samples):
            key, y_hat = s.key, s.fields.get("y_hat")
            missing = sorted(declared - s.values().keys())
            if missing:
                report.problems.append(f"shard {name}, key {key}: missing field(s) {', '.join(missing)}")
            if key in seen:
                report.problems.append(f"shard {name}, key {key}: duplicate key (also in {seen[key]})")
            seen[key] = name
            if y_hat is not None and list(y_hat.shape) != latent_shape:
                report.problems.append(f"shard {name}, key {key}: y_hat shape {list(y_hat.shape)} "
                                       f"!= manifest latent_shape {latent_shape}")
            if y_hat is not None and not np.isfinite(y_hat).all():  # CompressAI's ŷ is always finite
                report.problems.append(f"shard {name}, key {key}: y_hat holds {int((~np.isfinite(y_hat)).sum())} "
                                       "non-finite values (NaN or inf), which no codec decodes to: rebuild the group")
            if i in keep:
                kept.append((name, key, s))
            report.samples += 1
    except LatentstoreError as exc:
        report.problems.append(str(exc))
    return kept


def _check_decode(coder, name: str, key: str, s: Sample, created_by: dict, numerics_changed: bool) -> str | None:
    from ..build.encoder import EncodedImage, decode_y_hat  # CompressAI: only where a sample is decoded
    from ..store.threads import STORE_THREADS

    meta, stored = s.meta, s.fields["y_hat"]
    enc = EncodedImage(symbols=None, y_hat=None, y_string=s.fields["y_string"], z_string=s.fields.get("z_string"),
                       z_symbols=None, means=None, scales=None, y_shape=tuple(meta.y_shape),
                       z_shape=tuple(meta.z_shape) if meta.z_shape else None)
    # Compared in the stored dtype: a float16 store holds the decode after one rounding, so only values
    # whose rounding differs count (comparing the float32 decode would measure float16's step).
    decoded = decode_y_hat(coder, enc, threads=created_by.get("torch_threads", STORE_THREADS)).astype(stored.dtype)
    differ = decoded != stored
    if not differ.any():
        return None
    worst = np.abs(decoded[differ].astype(np.float64) - stored[differ].astype(np.float64)).max()
    problem = (f"shard {name}, key {key}: CompressAI decodes a different ŷ from the stored strings "
               f"({int(differ.sum())} of {differ.size} {stored.dtype} values, max |Δ| {worst:g})")
    revision = created_by.get("encoder_revision")
    if revision != ENCODER_REVISION:  # another revision of the encoder stores another ŷ by definition
        return (f"{problem}. The store was built by encoder revision {revision} (latentstore "
                f"{created_by.get('latentstore', '?')}; this one writes revision {ENCODER_REVISION}): rebuild it "
                f"with the same command into a new --out")
    if numerics_changed:
        return (f"{problem}. This machine's numerics differ from the build's (NOTE above), which changes float "
                "last bits: decode on the machine type the store was built on, or build "
                "it with --numerics portable (docs/FORMAT.md, \"What is exact\")")
    return (f"{problem}, with the numerics and torch {created_by.get('torch', '?')} it was built with: the "
            "sample is damaged or was written by other code; rebuild the store")


def _stray_files(store: Path, manifest: dict) -> list:
    """Everything in the store folder that is not part of the store: stray files, unlisted splits and
    shards, temporary files, links. Zarr chunk files are matched against the records by store/zarr/reader.py."""
    from ..store.seal import PARTS_DIR, part_file

    splits, zarr = manifest["splits"], manifest["backend"] == "zarr"
    known = {s["path"] for split in splits.values() for s in split["shards"]}
    known |= {s["index"]["path"] for split in splits.values() for s in split["shards"] if "index" in s}
    known |= {"manifest.json", *(f"build-{s}.json" for s in splits)}
    known |= {part_file(s, i, n) for s, (i, n) in _parts(store, splits)}
    if zarr:
        known |= {"zarr.json", ".layout.lock", *(f"{s}/zarr.json" for s in splits)}
    for name, split in splits.items():
        size = split["config"]["shard_size"]
        known |= {f"{name}/group-{j:06d}.json" for j in range(-(-split["images_found"] // size))}
    problems = []
    for dirpath, dirnames, filenames in os.walk(store):
        here = Path(dirpath)
        for entry in sorted(dirnames + filenames):
            path = here / entry
            rel = path.relative_to(store).as_posix()
            top = rel.split("/", 1)[0]
            if path.is_symlink():
                problems.append(f"{rel}: a link inside the store (a store holds plain files only); remove it")
            elif ".tmp-" in entry or entry.startswith(".tmp-group-"):
                if not (zarr and top in splits):  # inside a Zarr split, store/zarr/reader.py names them
                    problems.append(f"{rel}: leftover temporary file of an interrupted write "
                                    f"(delete it, or rerun the build command to finish)")
                dirnames[:] = [d for d in dirnames if d != entry]
            elif top not in splits and top != PARTS_DIR and rel not in known:
                problems.append(f"{rel}: not part of the store (no split {top!r} in the manifest); move it out")
                dirnames[:] = [d for d in dirnames if d != entry]
            elif path.is_dir() or rel in known or (top == PARTS_DIR and entry.startswith(".lock-")):
                continue
            elif zarr and (entry == "zarr.json" or "/c/" in rel):
                continue  # array descriptions and chunks: store/zarr/reader.py checks them against the records
            elif path.suffix == ".tar":
                problems.append(f"{rel}: shard not listed in the manifest")
            else:
                problems.append(f"{rel}: stray file, not part of the store; move it out")
    return problems


def _parts(store: Path, splits: dict) -> list:
    """(split, (i, N)) of every part manifest on disk whose split is in the manifest."""
    from ..store.seal import read_parts

    try:
        parts = read_parts(store)
    except ValueError:
        return []
    return [(s, (i, p.get("parts", 1))) for s, by in parts.items() if s in splits for i, p in by.items()]


def _check_totals(store: Path, manifest: dict) -> list:
    """The manifest's totals against its own shard list and the group records on disk."""
    problems = []
    for name, split in sorted(manifest["splits"].items()):
        shards = split["shards"]
        samples = sum(s["samples"] for s in shards)
        if samples != split["samples"]:
            problems.append(f"split {name!r}: the manifest says {split['samples']} samples, its shard list holds "
                            f"{samples} (an entry was removed or edited): rebuild the manifest with "
                            f"`latentstore seal {store}` or rerun the build")
        if split["images_stored"] != split["images_found"] - len(split["rejects"]):
            problems.append(f"split {name!r}: images_stored {split['images_stored']} != images_found "
                            f"{split['images_found']} - {len(split['rejects'])} rejects")
        size = split["config"]["shard_size"]
        recorded, found, rec_samples = [], 0, 0
        for j in range(-(-split["images_found"] // size)):
            try:
                record = json.loads((store / name / f"group-{j:06d}.json").read_text())
            except (OSError, ValueError):
                problems.append(f"split {name!r}: group record group-{j:06d}.json is missing or damaged")
                continue
            recorded += record["shards"]
            found += record["images"]
            rec_samples += record["stats"]["samples"]
        listed = sorted(s["path"] for s in shards)
        if sorted(s["path"] for s in recorded) != listed:
            missing = sorted(set(s["path"] for s in recorded) - set(listed))
            problems.append(f"split {name!r}: the group records hold shards the manifest does not list "
                            f"({', '.join(missing[:3]) or 'or the other way round'}); the manifest lost an entry")
        if found != split["images_found"] or rec_samples != split["samples"]:
            problems.append(f"split {name!r}: the group records account for {found} images and {rec_samples} "
                            f"samples, the manifest for {split['images_found']} and {split['samples']}")
    return problems


def _check_sources(store: Path, manifest: dict, root, report: Report) -> None:
    """Each split's group records against today's listing of its dataset (items and file fingerprints)."""
    from ..build.sources import open_source, source_changes

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
        flags = teacher_flags(cfg)
        stale = ("(rerun the build command" + (f" with {flags}" if flags else "") +
                 ": it re-encodes the changed groups)")
        if len(items) != split["images_found"]:
            advice = f"({ZARR_GROWTH_ADVICE})" if manifest["backend"] == "zarr" else stale
            report.problems.append(f"split {split_name!r}: {where} now lists {len(items)} images, the store was "
                                   f"built from {split['images_found']} {advice}")
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
    """Check `store` completely; `decode` random samples (all if more) are also decoded by CompressAI,
    at the torch thread count the store was built at.

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
    mode = numerics.dispatch(manifest["created_by"])["mode"]
    if decode:  # before any work: decoding must run in the store's numerics (the CLI restarts in them)
        numerics.require(mode)
    backend = manifest["backend"]
    report.problems += _stray_files(store, manifest)
    if backend == "zarr":  # chunk files and array descriptions against the commit records (store/zarr/reader.py)
        from ..store.zarr.reader import verify as verify_zarr
        report.problems += verify_zarr(store)
    report.problems += _check_totals(store, manifest)
    damaged = list(report.problems)
    if sources:
        _check_sources(store, manifest, root, report)
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
            # Its digests were checked just above (the shard and its index) or by verify_zarr (every chunk
            # file of the unit): its samples are read without the reader's own check, each byte digested once.
            samples = read_shard(store, backend, shard, check_digest=False)
            candidates += _check_samples(samples, shard["path"], declared, split["latent_shape"], seen, report, keep)
    if candidates:
        from ..coders.registry import load_coder_from_manifest

        coder = load_coder_from_manifest(manifest["coder"], weights)
        changed = numerics.differences(manifest["created_by"].get("numerics"), numerics.describe(mode))
        if changed:
            report.notes.append("this machine's numerics differ from the build's, so decoded floats may differ "
                                "in their last bits: " + "; ".join(changed))
        for name, key, s in tqdm(candidates, desc="decode", unit="sample", disable=not progress):
            problem = _check_decode(coder, name, key, s, manifest["created_by"], bool(changed))
            if problem:
                report.problems.append(problem)
            report.decoded += 1
    return report
