"""A tar shard's sample index: its format, the builder the writer fills as it streams, and the checked read.

The index is a JSON file beside its shard (train/v000-000001.tar -> train/v000-000001.idx.json) with four
columns, one entry per sample in tar order (docs/FORMAT.md "Shards"): the key, the byte offset of the
sample's first header block, the span's length up to the next sample's first header, and the CRC-32C of
those bytes. The writer records each span as it streams it, so it never reads the shard back; a reader
checks the index against its record and the shard's size before it seeks by it.
"""
from __future__ import annotations

import json
from pathlib import Path

import google_crc32c

from ...errors import StoreError

INDEX_SUFFIX = ".idx.json"
INDEX_COLUMNS = ("keys", "offsets", "bytes", "crc32c")


def index_name(shard_path: str) -> str:
    return shard_path.removesuffix(".tar") + INDEX_SUFFIX


class IndexBuilder:
    """The index of a shard being written: the writer adds each sample's span once it has streamed it."""

    def __init__(self):
        self.columns = {name: [] for name in INDEX_COLUMNS}

    def add(self, key: str, offset: int, size: int, crc32c: int) -> None:
        for name, value in zip(INDEX_COLUMNS, (key, offset, size, f"{crc32c:08x}")):
            self.columns[name].append(value)


def index_problem(index, size: int) -> str | None:
    """Why a sample index cannot describe a shard of `size` bytes, or None: its columns are lists of
    equal length, keys distinct strings, spans integers in increasing order, none overlapping, none
    past the end (a duplicated or swapped entry would repeat or reorder samples)."""
    if not isinstance(index, dict) or any(not isinstance(index.get(c), list) for c in ("keys", "offsets", "bytes")):
        return "is not a sample index"
    keys, offsets, sizes = index["keys"], index["offsets"], index["bytes"]
    if not len(keys) == len(offsets) == len(sizes):
        return "has columns of different lengths"
    if any(type(v) is not int for v in offsets + sizes) or any(not isinstance(k, str) for k in keys):
        return "holds entries that are not integers (offsets, bytes) or strings (keys)"
    if len(set(keys)) != len(keys):
        return "lists a key twice"
    end = 0
    for start, length in zip(offsets, sizes):
        if start < end or length <= 0:
            return f"has a span at {start} that is out of order, overlapping or empty"
        end = start + length
    if end > size:
        return f"has a span past the shard's end ({end} > {size} bytes)"
    return None


def read_index(path: Path, shard: str, record: dict, size: int) -> dict:
    """The sample index of the shard at `path`, checked against its record entry (size, CRC-32C) and the
    shard (sample count, spans inside its `size` bytes). Read again at every pass over the shard, not
    kept: it is ~1/1000 of the bytes the pass reads, and an ImageNet variant's indexes would cost each
    worker hundreds of MB."""
    entry = record.get("index")
    if not isinstance(entry, dict):
        raise StoreError(f"shard {shard}: its record lists no sample index (every shard has one), so the "
                         "record is damaged; run `latentstore verify` and rebuild the shard")
    where = f"shard {shard}: its index {entry['path']}"
    try:
        data = path.with_name(Path(entry["path"]).name).read_bytes()
    except FileNotFoundError as exc:
        raise StoreError(f"{where} is missing; run `latentstore verify` and rebuild the shard") from exc
    except OSError as exc:
        raise StoreError(f"{where} is unreadable ({exc}); run `latentstore verify` and rebuild the shard") from exc
    if len(data) != entry["bytes"] or f"{google_crc32c.value(data):08x}" != entry["crc32c"]:
        raise StoreError(f"{where} differs from its record (checksum); run `latentstore verify` and rebuild "
                         "the shard (delete its group record, rerun the build command)")
    index = json.loads(data)
    problem = index_problem(index, size)
    if problem:
        raise StoreError(f"{where}: {problem}; run `latentstore verify` and rebuild the shard")
    n = len(index["keys"])
    if n != record["samples"] or any(len(index[c]) != n for c in INDEX_COLUMNS) or \
            (n and index["offsets"][-1] + index["bytes"][-1] > size):
        raise StoreError(f"{where} does not describe the {record['samples']} samples of the shard's "
                         f"{size} bytes; run `latentstore verify`")
    return index
