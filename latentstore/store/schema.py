"""The shape of a manifest, checked when it is read: a hand-edited field is a one-line error, not a traceback.

Only what readers and verify index into is checked (types and ranges); what the values mean (digests, counts
against the files) is checked by verify and the readers against the files themselves.
"""
from __future__ import annotations

from ..errors import StoreError


def _is_int(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _file_problem(entry, where: str) -> str | None:
    if not isinstance(entry, dict):
        return f"{where} is {type(entry).__name__}, not a table"
    if not isinstance(entry.get("path"), str):
        return f"{where} has no 'path' (a string)"
    if not _is_int(entry.get("bytes")):
        return f"{where} ({entry['path']}) has no 'bytes' (a whole number >= 0)"
    for digest, digits in (("sha256", 64), ("crc32c", 8)):  # every committed file is recorded with both
        if not (isinstance(entry.get(digest), str) and len(entry[digest]) == digits):
            return f"{where} ({entry['path']}) has no '{digest}' ({digits} hex digits)"
    return None


def _shard_problem(shard, where: str, backend: str) -> str | None:
    if not isinstance(shard, dict):
        return f"{where} is {type(shard).__name__}, not a table"
    for name, low in (("variant", 0), ("samples", 0)):
        if not _is_int(shard.get(name), low):
            return f"{where} has {name}={shard.get(name)!r}, not a whole number >= {low}"
    files = shard.get("files", [shard])
    if not isinstance(files, list):
        return f"{where} has 'files' that is not a list"
    for k, entry in enumerate(files):
        problem = _file_problem(entry, where if "files" not in shard else f"{where} file {k}")
        if problem:
            return problem
    if backend == "webdataset":  # every tar shard has its sample index
        if "index" not in shard:
            return f"{where} ({shard['path']}) has no 'index' (its sample index)"
        return _file_problem(shard["index"], f"{where} index")
    return None


def _split_problem(name: str, split, backend: str) -> str | None:
    where = f"split {name!r}"
    if not isinstance(split, dict):
        return f"{where} is {split!r}, not a table"
    for field, low in (("variants", 1), ("samples", 0), ("images_found", 0), ("images_stored", 0)):
        if not _is_int(split.get(field), low):
            return f"{where} has {field}={split.get(field)!r}, not a whole number >= {low}"
    config = split.get("config")
    if not isinstance(config, dict) or not _is_int(config.get("shard_size"), 1):
        return f"{where} has no 'config' table with a shard_size >= 1"
    if not isinstance(split.get("shards"), list):
        return f"{where} has no 'shards' list"
    for k, shard in enumerate(split["shards"]):
        problem = _shard_problem(shard, f"{where} shard {k}", backend)
        if problem:
            return problem
    return None


def check_manifest(manifest: dict, path) -> None:
    """Raise a one-line StoreError naming `path` and the first field of the wrong type or out of range."""
    problem = None
    if not isinstance(manifest.get("backend"), str):
        problem = f"'backend' is {manifest.get('backend')!r}, not a backend name"
    for name, split in manifest["splits"].items():
        problem = problem or _split_problem(name, split, manifest["backend"])
    if problem:
        raise StoreError(f"{path} was edited or damaged: {problem}. `latentstore seal` rewrites it from the part "
                         "manifests; then run `latentstore verify`")
