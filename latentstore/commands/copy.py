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
from concurrent.futures import ThreadPoolExecutor

from ..errors import StoreError
from ..store.format import MANIFEST, read_manifest
from ..store.location import Location, check_bytes, is_url
from ..store.paths import shard_files
from ..store.remote import local_root

JOBS = 8  # files copied at a time
MEMORY = 4 << 30  # at most this many bytes of files held at once (each twice while read back): fewer jobs for big files


def _records(manifest: dict) -> dict:
    """{relative path: manifest record} of every file the manifest records."""
    return {f["path"]: f for info in manifest["splits"].values() for s in info["shards"] for f in shard_files(s)}


def copy_store(src: str, dst: str, src_options: dict | None = None, dst_options: dict | None = None,
               progress: Callable[[str, str], None] | None = None, jobs: int = JOBS) -> dict:
    """Copy store `src` to `dst`, `jobs` files at a time (each file is a few round trips to object storage:
    read, look for it at the destination, write, read back), fewer where its largest files would hold more
    than MEMORY in memory; returns {"copied": n, "skipped": n, "bytes": n}.
    `progress(rel, what)` is called per file ("copied" or "present"), from the copying threads."""
    manifest = read_manifest(local_root(src, src_options)[0] if is_url(src) else src)
    source, target = Location(src, src_options), Location(dst, dst_options)
    records = _records(manifest)
    files = [rel for rel in source.files() if rel != MANIFEST and not rel.rsplit("/", 1)[-1].startswith(".")]
    missing = sorted(set(records) - set(files))
    if missing:
        raise StoreError(f"{source.shown} lacks {len(missing)} file(s) its manifest records, e.g. {missing[0]}; "
                         f"run `latentstore verify {source.shown}`")

    def copy_file(rel: str) -> tuple[str, int]:
        record = records.get(rel)
        data = source.read(rel)
        problem = check_bytes(data, record)
        if problem:
            raise StoreError(f"{source.where(rel)}: {problem}; the source is damaged, run "
                             f"`latentstore verify {source.shown}`")
        digest = hashlib.sha256(data).hexdigest()
        if rel != MANIFEST and target.exists(rel) and hashlib.sha256(target.read(rel)).hexdigest() == digest:
            what = "present"
        else:
            target.write(rel, data)
            arrived = target.read(rel)
            if hashlib.sha256(arrived).hexdigest() != digest or check_bytes(arrived, record):
                raise StoreError(f"{target.where(rel)}: the copy differs from the source after writing "
                                 "(sha256); rerun `latentstore copy` to write it again")
            what = "copied"
        if progress:
            progress(rel, what)
        return what, len(data) if what == "copied" else 0

    largest = max((r["bytes"] for r in records.values()), default=0)
    jobs = max(1, min(jobs, MEMORY // max(2 * largest, 1)))
    done = {"copied": 0, "skipped": 0, "bytes": 0}
    with ThreadPoolExecutor(jobs) as pool:
        copies = [pool.submit(copy_file, rel) for rel in files]
        try:
            results = [c.result() for c in copies]
        except BaseException:  # the first error stops the copy: what is not started is not started
            for c in copies:
                c.cancel()
            raise
    results.append(copy_file(MANIFEST))  # last, once every other file is there
    for what, size in results:
        done["copied" if what == "copied" else "skipped"] += 1
        done["bytes"] += size
    return done
