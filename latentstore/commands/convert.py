"""`latentstore convert`: rewrite a store in the other backend, without re-encoding.

Samples are read group by group with the source backend's strict reader (after
the source files' sha256 are checked: a conversion must not launder damage; the
reader then skips its own digest pass) and handed, as Samples, to a GroupCommit
of the target backend (commit.rewrite_group). Every group is committed
atomically, so a killed conversion resumes where it stopped; the target is
sealed (manifest written) last. Converting back gives the original bytes: each
backend serialises with the store's own deterministic encoders.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tqdm import tqdm

from ..errors import ConfigError, StoreError
from ..store.commit import GroupLayout, read_record, rewrite_group
from ..store.format import MANIFEST, check_recorded_files, read_manifest, write_json_atomic
from ..store.locks import manifest_lock
from ..store.seal import PARTS_DIR, part_file, read_parts, seal
from ..store.writers import WRITERS


def _records(store: Path, split: str) -> list:
    return sorted((json.loads(p.read_text()) for p in (store / split).glob("group-*.json")),
                  key=lambda r: r["group"])


#: What a split's part manifest says about where its samples come from: equal in SRC and DST, or DST's
#: split belongs to another store (other arguments, images, coder or teacher).
_SPLIT_FACTS = ("config", "coder", "latent", "classes", "images", "listing", "groups")


def _start_afresh_if_other(dst: Path, split: str, wanted: dict) -> None:
    """Remove DST's split when it holds another store's: its groups were never checked against SRC."""
    try:
        theirs = [{k: p.get(k) for k in _SPLIT_FACTS} for p in read_parts(dst).get(split, {}).values()]
        other = any(p != {k: wanted.get(k) for k in _SPLIT_FACTS} for p in theirs)
    except (ValueError, AttributeError):  # a damaged part manifest: nothing it lists can be trusted
        other = True
    if (dst / MANIFEST).is_file():
        try:
            other |= json.loads((dst / MANIFEST).read_text())["splits"][split]["config"] != wanted["config"]
        except (ValueError, KeyError, TypeError):
            pass  # no such split (or no readable manifest): the part manifests decide
    if not other:
        return
    shutil.rmtree(dst / split, ignore_errors=True)
    for path in (dst / PARTS_DIR).glob(f"{split}-part-*.json"):
        path.unlink()
    (dst / f"build-{split}.json").unlink(missing_ok=True)


def _same_group(done: dict, source: dict) -> bool:
    """Whether DST's committed group holds SRC's group: the same items from the same source files, the same
    rejects, samples and bits (another seed, coder or image gives other bits)."""
    return (all(done.get(k) == source.get(k) for k in ("items", "sources", "rejects"))
            and all(done["stats"].get(k) == source["stats"].get(k) for k in ("samples", "bits", "pixels")))


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
    parts = read_parts(src)
    for split, entry in sorted(manifest["splits"].items()):
        first = next(iter(parts[split].values()))
        config = {**first["config"], "format": fmt}
        _start_afresh_if_other(dst, split, {**first, "config": config})
        records = _records(src, split)
        if sum(r["images"] for r in records) != entry["images_found"]:
            raise StoreError(f"{src} split {split!r}: group records do not cover the manifest's images")
        listed = {s["path"]: s for s in entry["shards"]}
        new_records = []
        for r in tqdm(records, desc=f"convert {split}", unit="group", disable=not progress):
            done = read_record(dst, split, r["group"])
            if done is not None and _same_group(done, r):
                new_records.append(done)
                continue
            # The source's digests first (rewrite_group reads without them): convert must not launder damage.
            for shard in r["shards"]:
                if listed.get(shard["path"]) != shard:
                    raise StoreError(f"{src} shard {shard['path']}: its group record and the manifest disagree; "
                                     "run `latentstore verify` on the source")
                check_recorded_files(src, shard, "convert")
            layout = GroupLayout(split, r["group"], entry["variants"], tuple(r["items"]),
                                 entry["config"]["shard_size"], entry["images_found"])
            new_records.append(rewrite_group(src, manifest["backend"], r, dst, fmt, layout))
        # One part manifest per split carries the split-level facts over; seal does the rest.
        with manifest_lock(dst):
            write_json_atomic(dst / part_file(split, 0, 1), {
                **first, "part": 0, "parts": 1, "backend": fmt, "config": config, "records": new_records})
            started = src / f"build-{split}.json"
            if started.is_file():  # lets `latentstore build` resume or extend the converted store
                record = json.loads(started.read_text())
                write_json_atomic(dst / started.name, {**record, "config": {**record["config"], "format": fmt}})
    return seal(dst)
