"""`latentstore copy`: publish a store from one location to another (local folders or URLs), resumably.

Every file is checked on arrival: read back from the destination, it must have the bytes that were read
from the source (sha256), and a file the manifest records (tar shards, sample indexes, Zarr chunk files)
must also match its record, at the source and at the destination. A file already at the destination with
the right digest is skipped, so an interrupted copy resumes where it stopped. manifest.json is written
last: a reader never sees a store whose manifest is there before its files.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable

from ..errors import StoreError
from ..store.format import MANIFEST, read_manifest
from ..store.location import Location, check_bytes, is_url
from ..store.paths import shard_files
from ..store.remote import local_root


def _records(manifest: dict) -> dict:
    """{relative path: manifest record} of every file the manifest records."""
    return {f["path"]: f for info in manifest["splits"].values() for s in info["shards"] for f in shard_files(s)}


def copy_store(src: str, dst: str, src_options: dict | None = None, dst_options: dict | None = None,
               progress: Callable[[str, str], None] | None = None) -> dict:
    """Copy store `src` to `dst`; returns {"copied": n, "skipped": n, "bytes": n}. `progress(rel, what)`
    is called per file ("copied" or "present")."""
    manifest = read_manifest(local_root(src, src_options)[0] if is_url(src) else src)
    source, target = Location(src, src_options), Location(dst, dst_options)
    records = _records(manifest)
    files = [rel for rel in source.files() if rel != MANIFEST and not rel.rsplit("/", 1)[-1].startswith(".")]
    missing = sorted(set(records) - set(files))
    if missing:
        raise StoreError(f"{source.shown} lacks {len(missing)} file(s) its manifest records, e.g. {missing[0]}; "
                         f"run `latentstore verify {source.shown}`")
    done = {"copied": 0, "skipped": 0, "bytes": 0}
    for rel in [*files, MANIFEST]:
        record = records.get(rel)
        data = source.read(rel)
        problem = check_bytes(data, record)
        if problem:
            raise StoreError(f"{source.where(rel)}: {problem}; the source is damaged, run "
                             f"`latentstore verify {source.shown}`")
        digest = hashlib.sha256(data).hexdigest()
        if rel != MANIFEST and target.exists(rel) and hashlib.sha256(target.read(rel)).hexdigest() == digest:
            done["skipped"] += 1
            if progress:
                progress(rel, "present")
            continue
        target.write(rel, data)
        arrived = target.read(rel)
        if hashlib.sha256(arrived).hexdigest() != digest or check_bytes(arrived, record):
            raise StoreError(f"{target.where(rel)}: the copy differs from the source after writing "
                             "(sha256); rerun `latentstore copy` to write it again")
        done["copied"] += 1
        done["bytes"] += len(data)
        if progress:
            progress(rel, "copied")
    return done
