"""Recorded paths: every file a manifest, commit record or sample index names must lie inside the store."""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..errors import StoreError


def recorded_problem(recorded) -> str | None:
    """Why `recorded` (a path as a record stores it) could name a file outside the store, or None:
    only relative POSIX paths without '..' are written by latentstore."""
    if not isinstance(recorded, str) or not recorded:
        return f"path {recorded!r} is not a path"
    pure = PurePosixPath(recorded)
    if pure.is_absolute() or recorded.startswith("\\") or ".." in pure.parts or "\\" in recorded or "\0" in recorded:
        return f"path {recorded!r} leads outside the store"
    return None


def check_recorded(store, recorded, where: str) -> None:
    """StoreError (one line naming `where` and the store) when `recorded` could leave the store."""
    problem = recorded_problem(recorded)
    if problem:
        raise StoreError(f"{store}: {where}: {problem}; the records were edited: restore them or rebuild the store")


def zarr_array_of(recorded: str) -> str:
    """The array a recorded Zarr chunk file belongs to: "train/y_hat/c/0/1" -> "y_hat"; "train/meta/bytes/c/..."
    -> "meta"."""
    return recorded.split("/c/", 1)[0].split("/")[1]


def shard_files(shard: dict, arrays=None) -> list[dict]:
    """The records of a manifest shard's files: a tar shard and its sample index, or a Zarr unit's chunk
    files; with `arrays` (names: zarr/reader.py `arrays_read`), only the chunk files of those arrays. A tar
    shard holds every field of a sample together, so a reader needs it whole; a Zarr store keeps each field
    in arrays of its own, and a reader of ŷ and labels needs neither symbols nor strings."""
    if "files" not in shard:
        return [shard, *([shard["index"]] if shard.get("index") else [])]
    return [f for f in shard["files"] if arrays is None or zarr_array_of(f["path"]) in arrays]


def store_file(store, recorded, where: str) -> Path:
    """The file `recorded` names inside `store`, refused (StoreError) before it is opened when the path
    could leave the store, lexically or through a symlink to a place outside it."""
    check_recorded(store, recorded, where)
    store = Path(store)
    path = store / recorded
    # Only the components inside the store can be links an editor of the store made: one lstat each
    # (resolving the whole path costs several times more per shard, docs/benchmarks.md).
    here = store
    for part in PurePosixPath(recorded).parts:
        here = here / part
        if os.path.islink(here) and not here.resolve().is_relative_to(store.resolve()):
            raise StoreError(f"{store}: {where}: {recorded} is a link to {here.resolve()}, outside the store; "
                             "replace it with the file itself or rebuild the group")
    return path
