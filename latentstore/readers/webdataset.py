"""Strict reading of latentstore tar shards.

A tar file has no trailer, so a shard cut at a member boundary reads back
without any error from tarfile or webdataset. The strict reader therefore
checks every shard against the manifest: its size, and its digest before
reading (CRC-32C, or sha256 for stores that predate it: one C-speed pass over
a read-only map of the file, latentstore/checksum.py), so a flipped payload
byte is caught before any sample is handed out; then the sample count, the
required fields of every sample, and that each field decodes. Every error
names the shard and, where there is one, the sample key. A shard whose digest
matched is remembered for the life of the process (by path, size and mtime),
so later epochs read it without checking again: a changed file gets a new
mtime, and the check then runs again.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Container, Iterator

from ..checksum import check_once
from ..errors import StoreError
from ..format import REQUIRED_FIELDS, decode_field, field_for_member


_BLOCK = 512
_END = bytes(_BLOCK)


def _octal(field: bytes) -> int:
    field = field.rstrip(b"\0 ").lstrip(b" ")
    return int(field, 8) if field else 0


def _header(block: bytes, shard: str, offset: int) -> tuple[bytes, int, bytes]:
    """(name, size, type flag) of one 512-byte tar header, its checksum verified."""
    stored = _octal(block[148:156])
    if stored != sum(block[:148]) + 256 + sum(block[156:]):  # the 8 checksum bytes count as spaces
        raise StoreError(f"shard {shard}: damaged tar header at byte {offset} (checksum)")
    name = block[:100].split(b"\0", 1)[0]
    if block[257:262] == b"ustar" and block[345] != 0:  # ustar's name prefix: a path, refused below
        name = block[345:500].split(b"\0", 1)[0] + b"/" + name
    return name, _octal(block[124:136]), block[156:157]


def _members(path: Path, shard: str, wanted: Container[int] | None = None) -> Iterator[tuple[str, str, bytes | None]]:
    """(key, member suffix, bytes) for each member, in tar order; bytes None for the members of a
    sample whose index is not in `wanted` (None: all), which are seeked over, not read: a
    DataLoader worker wants only its share of a shard, and reading the rest k times over is
    what k workers would otherwise cost.

    A small tar parser instead of ``tarfile``: its header objects cost more than
    everything else the reader does per sample. It verifies every header's
    checksum, follows PAX and GNU long names, and refuses anything but plain
    files named "<key>.<suffix>" (members are read into memory, never
    extracted, but no name may point elsewhere). EOF at a member boundary ends
    the iteration quietly, like tarfile: the caller's sample count decides.
    """
    try:
        with open(path, "rb") as f:
            offset, long_name, current, index = 0, None, None, -1
            while True:
                block = f.read(_BLOCK)
                if len(block) < _BLOCK or block == _END:
                    if block and block != _END:
                        raise StoreError(f"shard {shard}: truncated tar header at byte {offset}")
                    return
                name, size, kind = _header(block, shard, offset)
                extension = kind in (b"x", b"L", b"g")  # PAX record, GNU long name, PAX global header
                if not extension:
                    name, long_name = (long_name or name), None
                    text = name.decode("utf-8", errors="replace")
                    if kind not in (b"0", b"\0") or "/" in text or "\\" in text or text.startswith("."):
                        raise StoreError(f"shard {shard}: unexpected member {text!r} "
                                         f"(only plain files named <key>.<suffix> belong in a shard)")
                    key, _, ext = text.partition(".")
                    if key != current:
                        current, index = key, index + 1
                wanted_here = extension or wanted is None or index in wanted
                data = _read(f, size, shard, name) if wanted_here else None
                offset += _BLOCK + size + (-size % _BLOCK)
                f.seek(offset)
                if kind == b"x":  # the next member's name
                    long_name = _pax_path(data)
                elif kind == b"L":
                    long_name = data.rstrip(b"\0")
                elif not extension:  # a PAX global header holds nothing a latentstore shard needs
                    yield key, ext, data
    except OSError as exc:
        raise StoreError(f"shard {shard}: unreadable tar ({exc})") from exc


def _read(f, size: int, shard: str, name: bytes) -> bytes:
    data = f.read(size)
    if len(data) < size:
        raise StoreError(f"shard {shard}: member {name.decode(errors='replace')!r} is truncated "
                         f"({len(data)} of {size} bytes)")
    return data


def _pax_path(data: bytes) -> bytes | None:
    """The "path" record of a PAX extended header ("<len> path=<value>\n" records)."""
    while data:
        length = int(data.split(b" ", 1)[0])
        record, data = data[:length], data[length:]
        key, _, value = record.split(b" ", 1)[1].partition(b"=")
        if key == b"path":
            return value[:-1]
    return None


def iter_shard(path, shard: str, expected_samples: int | None = None,
               fields: tuple | None = None, required: tuple = REQUIRED_FIELDS,
               lenient: bool = False, wanted: Container[int] | None = None,
               record: dict | None = None) -> Iterator[dict | None]:
    """Yield the samples of one shard as dicts {field: decoded value, "__key__", "__shard__"}.

    `fields` limits which fields are decoded (None: all). `wanted` (sample
    indices; None: all) leaves the others undecoded and unchecked: None is
    yielded in their place, so positions still count. Raises StoreError naming
    the shard (and key) on a damaged tar, a missing field, an undecodable field,
    or a sample count other than `expected_samples`. With ``lenient=True`` it
    yields {"__key__", "__shard__", "__error__": message} in place of a damaged
    sample and goes on; damage to the shard itself (unreadable tar, wrong count)
    comes last, as such a dict with ``__key__`` None. With `record` (the
    manifest's shard entry: bytes, sha256 and, in newer stores, crc32c) the file
    must match it before any sample is read.
    """
    count = 0
    try:
        st = os.stat(path)
        if record is not None and st.st_size != record["bytes"]:
            raise StoreError(f"shard {shard}: {st.st_size} bytes, the manifest records {record['bytes']} "
                             "(truncated or replaced shard; run `latentstore verify` and rebuild it)")
        if record is not None and not check_once(path, record):
            yield from _damaged(Path(path), shard, expected_samples, lenient)
            return
        for key, raw in _groups(Path(path), shard, wanted):
            count += 1
            if wanted is not None and count - 1 not in wanted:
                yield None
                continue
            try:
                yield _decode(shard, key, raw, fields, required)
            except StoreError as exc:
                if not lenient:
                    raise
                yield {"__key__": key, "__shard__": shard, "__error__": str(exc)}
        if expected_samples is not None and count != expected_samples:
            raise StoreError(
                f"shard {shard}: holds {count} samples, the manifest records {expected_samples} "
                f"(truncated or replaced shard; run `latentstore verify` and rebuild it)"
            )

    except OSError as exc:
        if not lenient:
            raise StoreError(f"shard {shard}: unreadable ({exc})") from exc
        yield {"__key__": None, "__shard__": shard, "__error__": f"shard {shard}: unreadable ({exc})"}
    except StoreError as exc:
        if not lenient:
            raise
        yield {"__key__": None, "__shard__": shard, "__error__": str(exc)}


def _damaged(path: Path, shard: str, expected: int | None, lenient: bool) -> Iterator[dict]:
    """A shard whose digest differs: no sample is trusted. Strict: one error naming the keys it holds;
    lenient: an error per sample, with its key (so skip lists name them)."""
    why = ("bytes differ from the manifest's checksum (a damaged or replaced shard), so none of its samples can be "
           "trusted. Run `latentstore verify` and rebuild it (delete its group record, rerun the build command)")
    keys = [key for key, _ in iter_raw(path, shard, wanted=())]  # headers only; a damaged one raises here
    if not lenient:
        listed = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        raise StoreError(f"shard {shard}: {why}. Its keys: {listed or 'none'}")
    for key in keys[:expected]:
        yield {"__key__": key, "__shard__": shard, "__error__": f"shard {shard}, key {key}: {why}"}
    if expected is not None and len(keys) != expected:
        raise StoreError(f"shard {shard}: holds {len(keys)} samples, the manifest records {expected}")


def iter_raw(path, shard: str, wanted: Container[int] | None = None) -> Iterator[tuple[str, dict]]:
    """(key, {member suffix: bytes}) per sample, in tar order, bytes untouched (None where the
    sample's index is not in `wanted`)."""
    current, members = None, {}
    for key, ext, data in _members(Path(path), shard, wanted):
        if key != current:
            if current is not None:
                yield current, members
            current, members = key, {}
        if ext in members:
            raise StoreError(f"shard {shard}, key {key}: duplicate member {key}.{ext}")
        members[ext] = data
    if current is not None:
        yield current, members


def _groups(path: Path, shard: str, wanted: Container[int] | None = None) -> Iterator[tuple[str, dict]]:
    """(key, {field name: bytes}) per sample, in tar order (bytes None outside `wanted`)."""
    for key, members in iter_raw(path, shard, wanted):
        raw = {}
        for ext, data in members.items():
            field = field_for_member(ext)
            if field is None:
                raise StoreError(f"shard {shard}, key {key}: unknown member suffix {ext!r}")
            raw[field.name] = data
        yield key, raw


def _decode(shard: str, key: str, raw: dict, fields, required) -> dict:
    missing = [name for name in required if name not in raw]
    if missing:
        raise StoreError(f"shard {shard}, key {key}: missing field(s) {', '.join(missing)}")
    sample = {"__key__": key, "__shard__": shard}
    for name, data in raw.items():
        if fields is None or name in fields:
            try:
                sample[name] = decode_field(name, data)
            except Exception as exc:
                raise StoreError(f"shard {shard}, key {key}: field {name} does not decode ({exc})") from exc
    return sample
