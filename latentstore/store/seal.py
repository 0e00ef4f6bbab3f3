"""Parts and sealing: how committed groups become a manifest.

Every build is a part ``i/N`` of its split (a plain build is part 0/1). A part
owns the item groups j with ``j % N == i``; when all of them are committed it
writes ``parts/<split>-part-iiii-of-NNNN.json`` holding their commit records.
``seal`` merges the part manifests of every split into ``manifest.json`` and
refuses, naming the part, when one is missing, incomplete or was built with
other arguments. A plain build seals its own split at the end.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tqdm import tqdm

from ..errors import ConfigError, StoreError
from . import numerics
from .checksum import file_problem
from .format import FORMAT_NAME, FORMAT_VERSION, MANIFEST, recorded_files, write_json_atomic
from .locks import is_locked, manifest_lock, part_lock_path

PARTS_DIR = "parts"
#: build arguments that may change between runs and parts: they decide whether a build goes on, not its bytes
RESUME_FREE = frozenset({"max_rejects"})
_PART_FILE = re.compile(r"^(?P<split>.+)-part-(?P<i>\d{4})-of-(?P<n>\d{4})\.json$")


def part_file(split: str, part: int, parts: int) -> str:
    return f"{PARTS_DIR}/{split}-part-{part:04d}-of-{parts:04d}.json"


def parse_part(value: str | None, environ=os.environ) -> tuple[int, int]:
    """`--part i/N`, or `--part auto` from SLURM array or torchrun variables; None means 0/1."""
    if value is None:
        return 0, 1
    if value == "auto":
        if "SLURM_ARRAY_TASK_ID" in environ:
            first = int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
            return _checked(int(environ["SLURM_ARRAY_TASK_ID"]) - first, int(environ["SLURM_ARRAY_TASK_COUNT"]))
        if "RANK" in environ and "WORLD_SIZE" in environ:
            return _checked(int(environ["RANK"]), int(environ["WORLD_SIZE"]))
        raise ConfigError("--part auto needs SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT (a SLURM array job) "
                          "or RANK/WORLD_SIZE (torchrun); outside those, pass --part i/N")
    match = re.fullmatch(r"(\d+)/(\d+)", value)
    if not match:
        raise ConfigError(f"Invalid --part {value!r}: use i/N with 0 <= i < N (e.g. 3/64), or auto")
    return _checked(int(match[1]), int(match[2]))


def _checked(part: int, parts: int) -> tuple[int, int]:
    if not 0 <= part < parts:
        raise ConfigError(f"Invalid part {part}/{parts}: need 0 <= i < N")
    return part, parts


def split_entry(config: dict, classes: list, images_total: int, records: list, latent: dict) -> dict:
    """The manifest entry of one split, from the commit records of all its groups."""
    stats = [r["stats"] for r in records]
    samples = sum(s["samples"] for s in stats)
    pixels = sum(s["pixels"] for s in stats)
    field_bytes: dict = {}
    for s in stats:
        for ext, n in s["field_bytes"].items():
            field_bytes[ext] = field_bytes.get(ext, 0) + n
    rejects = [rej for r in records for rej in r["rejects"]]
    found = sum(r["images"] for r in records)
    if found != images_total:
        raise StoreError(f"internal error: {images_total} images listed, groups account for {found}")
    return {
        "config": config, "classes": classes,
        "images_found": found, "images_stored": found - len(rejects),
        "variants": config["variants"], "samples": samples, **latent,
        "mean_bpp": sum(s["bits"] for s in stats) / pixels if pixels else None,
        "bytes_per_sample": {ext: n / samples for ext, n in sorted(field_bytes.items())} if samples else {},
        "shards": [shard for r in records for shard in r["shards"]],
        "rejects": rejects,
    }


def _bytes_config(part: dict) -> dict:
    return {k: v for k, v in part["config"].items() if k not in RESUME_FREE}


def read_parts(store: Path) -> dict:
    """{split: {part index: part manifest}} for every part manifest on disk."""
    found: dict = {}
    folder = Path(store) / PARTS_DIR
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        match = _PART_FILE.match(path.name)
        if match:
            found.setdefault(match["split"], {})[int(match["i"])] = json.loads(path.read_text())
    return found


def seal(store, splits: list | None = None, progress: bool = False, building: tuple | None = None) -> dict:
    """Merge part manifests into manifest.json; refuse, naming the part, if any is missing or unfinished.

    `splits` limits sealing to those splits (a plain build seals its own); the
    entries of other splits already in manifest.json are kept as they are. `progress`: a bar
    over the parts' shard checks. `building`: the (split, part, parts) whose lock the caller holds (a plain
    build sealing its own split); any other part whose build is running is refused, as its manifest is old.
    """
    store = Path(store)
    with manifest_lock(store):  # another seal, build or convert may be rewriting manifest.json right now
        return _seal_locked(store, splits, progress, building)


def _seal_locked(store: Path, splits, progress: bool, building) -> dict:
    parts_by_split = read_parts(store)
    if splits is not None:
        parts_by_split = {s: p for s, p in parts_by_split.items() if s in splits}
    if not parts_by_split:
        raise StoreError(f"{store} has no part manifests under {PARTS_DIR}/: no build part has finished yet")
    try:
        previous = json.loads((store / MANIFEST).read_text()) if (store / MANIFEST).is_file() else None
    except ValueError:  # a damaged manifest is what sealing again repairs
        previous = None
    kept = {s: e for s, e in (previous or {}).get("splits", {}).items() if s not in parts_by_split}
    problems, entries = [], {}
    coder = previous["coder"] if previous and kept else None
    created_by = previous["created_by"] if previous and kept else None
    for split, parts in sorted(parts_by_split.items()):
        first = next(iter(parts.values()))
        n = first["parts"]
        for i in range(n):
            if i not in parts:
                problems.append(f"split {split!r}: part {i}/{n} is missing or unfinished "
                                f"(rerun its build command with --part {i}/{n})")
        for i in range(n):
            if (split, i, n) != building and is_locked(part_lock_path(store, split, i, n)):
                problems.append(f"split {split!r}: part {i}/{n} is being built or rewritten right now: wait for "
                                "that command to finish, then seal")
        bar = tqdm(total=sum(len(p["records"]) for p in parts.values()), desc=f"seal {split}", unit="group",
                   disable=not progress)
        for i, p in parts.items():
            if p["parts"] != n or _bytes_config(p) != _bytes_config(first) or p["coder"] != first["coder"]:
                problems.append(f"split {split!r}: part {i}/{p['parts']} was built with other arguments than "
                                f"part {first['part']}/{n}")
            elif numerics.dispatch(p["created_by"]) != numerics.dispatch(first["created_by"]):
                problems.append(f"split {split!r}: part {i}/{n} was encoded with other CPU numerics than part "
                                f"{first['part']}/{n} ({numerics.dispatch(p['created_by'])} vs "
                                f"{numerics.dispatch(first['created_by'])}): rebuild it on the machine type of the "
                                "others, or build every part with --numerics portable")
            elif p.get("listing") != first.get("listing") or p["images"] != first["images"]:
                problems.append(f"split {split!r}: part {i}/{n} listed other images ({p['images']}) than part "
                                f"{first['part']}/{n} ({first['images']}): the dataset changed between them. "
                                f"Rerun every part's build command (each re-encodes only its changed groups)")
            for r in p["records"]:
                bar.update(1)
                for f in recorded_files(r):
                    problem = file_problem(store / f["path"], f)
                    if problem:
                        problems.append(f"split {split!r}: part {i}/{n}: {f['path']} {problem} (rerun the "
                                        "part's build command)")
        bar.close()
        if coder is not None and coder != first["coder"]:
            problems.append(f"split {split!r} was encoded with another coder or weights than the other splits")
        if created_by is not None and numerics.dispatch(created_by) != numerics.dispatch(first["created_by"]):
            problems.append(f"split {split!r} was encoded with other CPU numerics than the other splits: build "
                            "every split of a store with the same --numerics (and, native, on one machine type)")
        coder, created_by, backend = first["coder"], first["created_by"], first["backend"]
        if problems:
            continue
        records = sorted((r for p in parts.values() for r in p["records"]), key=lambda r: r["group"])
        groups = [r["group"] for r in records]
        if groups != list(range(first["groups"])):
            problems.append(f"split {split!r}: groups {sorted(set(range(first['groups'])) - set(groups))} "
                            f"are missing or duplicated across parts")
            continue
        entries[split] = split_entry(first["config"], first["classes"], first["images"], records, first["latent"])
    if problems:
        raise StoreError(f"Cannot seal {store}:\n  " + "\n  ".join(problems))
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "backend": backend,
                "created_by": created_by, "coder": coder, "splits": dict(sorted({**kept, **entries}.items()))}
    write_json_atomic(store / MANIFEST, manifest)
    return manifest
