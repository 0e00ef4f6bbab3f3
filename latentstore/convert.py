"""`latentstore convert`: rewrite a store in the other backend, without re-encoding.

Samples are read group by group with the source backend's strict reader and
handed, as the same member bytes a tar shard holds, to the target backend's
group writer. Every group is committed atomically, so a killed conversion
resumes where it stopped; the target is sealed (manifest written) last.
Converting back gives the original bytes: fields are re-encoded with the
store's own deterministic encoders.
"""
from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from .errors import ConfigError, StoreError
from .format import (check_recorded_files, commit_record_name, encode_field, get_field, read_manifest,
                     write_json_atomic)
from .seal import part_file, read_parts, seal
from .dataset import SHARD_READERS
from .writers import WRITERS


def _records(store: Path, split: str) -> list:
    return sorted((json.loads(p.read_text()) for p in (store / split).glob("group-*.json")),
                  key=lambda r: r["group"])


def member_files(sample: dict) -> dict:
    """A decoded sample back to its member bytes."""
    files = {"__key__": sample["__key__"]}
    for name, value in sample.items():
        if not name.startswith("__"):
            files[get_field(name).ext] = encode_field(name, value)
    return files


def _committed(dst: Path, split: str, group: int) -> dict | None:
    path = dst / commit_record_name(split, group)
    return json.loads(path.read_text()) if path.is_file() else None


def convert(src, dst, fmt: str, progress: bool = True) -> dict:
    """Write store `src` as a `fmt` store at `dst` (a new folder, or an unfinished conversion)."""
    src, dst = Path(src), Path(dst)
    manifest = read_manifest(src)
    if fmt not in WRITERS:
        raise ConfigError(f"Invalid --format {fmt!r}: choose {', '.join(WRITERS)}")
    if manifest["backend"] == fmt:
        raise ConfigError(f"{src} is already a {fmt} store")
    if src.resolve() == dst.resolve():
        raise ConfigError("convert writes a new store: give a DST other than SRC")
    read = SHARD_READERS[manifest["backend"]]
    parts = read_parts(src)
    for split, entry in sorted(manifest["splits"].items()):
        records = _records(src, split)
        if sum(r["images"] for r in records) != entry["images_found"]:
            raise StoreError(f"{src} split {split!r}: group records do not cover the manifest's images")
        shard_size, variants = entry["config"]["shard_size"], entry["variants"]
        listed = {s["path"]: s for s in entry["shards"]}
        new_records = []
        for r in tqdm(records, desc=f"convert {split}", unit="group", disable=not progress):
            done = _committed(dst, split, r["group"])
            if done is not None:
                new_records.append(done)
                continue
            items = r["items"]
            layout = {"item_keys": items, "first_item": r["group"] * shard_size,
                      "total_items": entry["images_found"], "shard_size": shard_size}
            for shard in r["shards"]:  # the source's checksums first: convert must not launder damage
                if listed.get(shard["path"]) != shard:
                    raise StoreError(f"{src} shard {shard['path']}: its group record and the manifest disagree; "
                                     "run `latentstore verify` on the source")
                check_recorded_files(src, shard, "convert")
            with WRITERS[fmt](dst, split, r["group"], variants, layout) as writer:
                for shard in r["shards"]:
                    for sample in read(src, shard, None, False):
                        writer.write(shard["variant"], member_files(sample))
                writer.extra = {k: v for k, v in r.items() if k not in ("group", "shards")}
            new_records.append(_committed(dst, split, r["group"]))
        # One part manifest per split carries the split-level facts over; seal does the rest.
        first = next(iter(parts[split].values()))
        config = {**first["config"], "format": fmt}
        write_json_atomic(dst / part_file(split, 0, 1), {
            **first, "part": 0, "parts": 1, "backend": fmt, "config": config, "records": new_records})
        started = src / f"build-{split}.json"
        if started.is_file():  # lets `latentstore build` resume or extend the converted store
            record = json.loads(started.read_text())
            write_json_atomic(dst / started.name, {**record, "config": {**record["config"], "format": fmt}})
    return seal(dst)
