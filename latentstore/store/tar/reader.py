"""Strict reading of latentstore tar shards into Samples, and their sample index.

A tar file has no trailer, so a shard cut at a member boundary reads back
without any error from tarfile or webdataset. The strict reader therefore
checks every shard against the manifest: its size, then its bytes before any
sample is handed out, then the sample count, the required fields of every
sample, and that each field decodes. Every error names the shard and, where
there is one, the sample key.

The bytes are checked through the shard's sample index (store/tar/index.py,
made by the writer as it streams the shard; docs/FORMAT.md "Shards"): each
sample the caller wants is one read of its span, checked against its own
CRC-32C, and the other samples are not read at all. Where google-crc32c has
only its pure-Python fallback, the whole shard's sha256 is checked first
instead (latentstore/store/checksum.py). Either check runs once per process and
sample (or shard), remembered by path, size and mtime: later epochs over the
same shard skip it, and a changed file gets a new mtime, so the check runs again.
Such a sample is then read member by member, only the fields the caller decodes;
an unchecked one is one read of its span, parsed in place.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Container, Iterator

import google_crc32c

from ...errors import StoreError
from ..checksum import CRC32C_IS_FAST, check_once
from ..format import REQUIRED_FIELDS, decode_field, field_for_member
from ..locks import write_in_progress
from ..sample import ReadError, Sample, SampleMeta, in_order
from .index import INDEX_COLUMNS, read_index

_BLOCK = 512
_END = bytes(_BLOCK)


def _octal(field: bytes) -> int:
    field = field.rstrip(b"\0 ").lstrip(b" ")
    return int(field, 8) if field else 0


def _header(block: bytes, shard: str, offset: int, verify: bool = True) -> tuple[bytes, int, bytes]:
    """(name, size, type flag) of one 512-byte tar header, its checksum verified (with `verify`)."""
    if verify and _octal(block[148:156]) != sum(block[:148]) + 256 + sum(block[156:]):  # checksum bytes count as spaces
        raise StoreError(f"shard {shard}: damaged tar header at byte {offset} (checksum)")
    name = block[:100].split(b"\0", 1)[0]
    if block[257:262] == b"ustar" and block[345] != 0:  # ustar's name prefix: a path, refused below
        name = block[345:500].split(b"\0", 1)[0] + b"/" + name
    return name, _octal(block[124:136]), block[156:157]


def _walk(f: BinaryIO, shard: str, verify: bool = True, end: int | None = None) -> Iterator[tuple[int, str, str, int]]:
    """(start, key, member suffix, size) for each member of an open tar, in order, with `f` left at
    the member's data for the caller to read or not; `start` is the offset of the member's first
    header block (a PAX or GNU long-name header before it included).

    A small tar parser instead of ``tarfile``: its header objects cost more than
    everything else the reader does per sample. It verifies every header's
    checksum, follows PAX and GNU long names, and refuses anything but plain
    files named "<key>.<suffix>" (members are read into memory, never
    extracted, but no name may point elsewhere). EOF at a member boundary ends
    the iteration quietly, like tarfile: the caller's sample count decides; so does offset `end`, a
    sample's span. `verify` False skips the header checksums, for bytes whose CRC-32C has matched already.
    """
    offset, long_name, start = f.tell(), None, None
    while end is None or offset < end:
        block = bytes(f.read(_BLOCK))  # no copy from a file; a header's copy from a _View
        if len(block) < _BLOCK or block == _END:
            if block and block != _END:
                raise StoreError(f"shard {shard}: truncated tar header at byte {offset}")
            return
        name, size, kind = _header(block, shard, offset, verify)
        start = offset if start is None else start
        next_offset = offset + _BLOCK + size + (-size % _BLOCK)
        if kind in (b"x", b"L", b"g"):  # PAX record, GNU long name, PAX global header
            data = bytes(_read(f, size, shard, name.decode("utf-8", errors="replace")))
            if kind == b"x":  # the next member's name
                long_name = _pax_path(data, shard, offset, name.decode("utf-8", errors="replace"))
            elif kind == b"L":
                long_name = data.rstrip(b"\0")
        else:
            name, long_name = (long_name or name), None
            text = name.decode("utf-8", errors="replace")
            if kind not in (b"0", b"\0") or "/" in text or "\\" in text or text.startswith("."):
                raise StoreError(f"shard {shard}: unexpected member {text!r} "
                                 f"(only plain files named <key>.<suffix> belong in a shard)")
            key, _, ext = text.partition(".")
            yield start, key, ext, size
            start = None
        offset = next_offset
        f.seek(offset)


def _members(path: Path, shard: str, wanted: Container[int] | None = None) -> Iterator[tuple[str, str, bytes | None]]:
    """(key, member suffix, bytes) for each member, in tar order; bytes None for the members of a
    sample whose index is not in `wanted` (None: all), which are seeked over, not read: a
    DataLoader worker wants only its share of a shard, and reading the rest k times over is
    what k workers would otherwise cost."""
    try:
        with open(path, "rb") as f:
            current, index = None, -1
            for _, key, ext, size in _walk(f, shard):
                if key != current:
                    current, index = key, index + 1
                yield key, ext, (_read(f, size, shard, key + "." + ext) if wanted is None or index in wanted else None)
    except OSError as exc:
        raise StoreError(f"shard {shard}: unreadable tar ({exc})") from exc


def _read(f, size: int, shard: str, name: str) -> bytes:
    data = f.read(size)
    if len(data) < size:
        raise StoreError(f"shard {shard}: member {name!r} is truncated ({len(data)} of {size} bytes)")
    return data


def _pax_path(data: bytes, shard: str = "?", offset: int = 0, member: str = "?") -> bytes | None:
    """The "path" record of a PAX extended header ("<len> path=<value>\n" records); a malformed record is a
    StoreError naming the shard, the header's byte offset and its member name."""
    while data:
        length, space, rest = data.partition(b" ")
        if not (space and length.isdigit() and len(length) + 1 < int(length) <= len(data)
                and data[int(length) - 1:int(length)] == b"\n" and b"=" in rest[:int(length) - len(length) - 1]):
            raise StoreError(f"shard {shard}: malformed PAX header {member!r} at byte {offset} (a record "
                             f"{data[:40]!r}...); the shard is damaged: run `latentstore verify` and rebuild it")
        record, data = data[:int(length)], data[int(length):]
        key, _, value = record.split(b" ", 1)[1].partition(b"=")
        if key == b"path":
            return value[:-1]
    return None


# --------------------------------------------------------------------------- the sample index

#: (shard path, size, mtime_ns, its index's crc32c) -> one byte per sample, 1 once its CRC matched in
#: this process: later epochs over the same shard skip the check (a changed file gets a new mtime).
#: About 1 kB per shard of 1,000 samples: an ImageNet run with 16 variants keeps ~25 MB per worker.
_CHECKED_SAMPLES: dict = {}


def build_index(path, shard: str) -> dict:
    """The sample index of a tar shard: per sample in tar order, its key, byte span (from its first
    header block to the next sample's) and the CRC-32C of those bytes, as JSON columns, found by this
    module's parser: what `verify` compares the index the writer recorded with."""
    keys, offsets, ends = [], [], []
    with open(path, "rb") as f:
        for start, key, _, size in _walk(f, shard):
            if not keys or keys[-1] != key:  # a sample's first member
                keys.append(key)
                offsets.append(start)
                ends.append(None)
            ends[-1] = f.tell() + size + (-size % _BLOCK)  # its span so far: to this member's padded end
        crcs = []
        for start, end in zip(offsets, ends):
            f.seek(start)
            crcs.append(f"{google_crc32c.value(f.read(end - start)):08x}")
    return {"keys": keys, "offsets": offsets, "bytes": [e - s for s, e in zip(offsets, ends)], "crc32c": crcs}


class _View:
    """The read/seek/tell of a file over a memoryview, whose reads are views, not copies: a sample's
    span is read once and its members are parsed in place (decoding copies out what it keeps)."""

    def __init__(self, view: memoryview):
        self._view, self._pos = view, 0

    def read(self, size: int) -> memoryview:
        data = self._view[self._pos:self._pos + size]
        self._pos += len(data)
        return data

    def seek(self, pos: int) -> None:
        self._pos = pos

    def tell(self) -> int:
        return self._pos


def _indexed(path: Path, shard: str, record: dict, st: os.stat_result, fields, required, lenient: bool,
             wanted: Container[int] | None, variant: int | None,
             order: list[int] | None, trusted: bool) -> Iterator[Sample | ReadError | None]:
    """iter_shard through the sample index: each wanted sample is one read of its span, checked
    against its own CRC-32C (once per process, none if `trusted`); the others are not read at all. With
    `order`, the samples of those indices in that order, each read when the caller pulls it."""
    index = read_index(path, shard, record, st.st_size)
    keys, offsets, sizes, crcs = (index[c] for c in INDEX_COLUMNS)
    checked = _CHECKED_SAMPLES.setdefault((str(path), st.st_size, st.st_mtime_ns, record["index"]["crc32c"]),
                                          bytearray(len(keys)))
    if trusted:  # these bytes matched the shard's CRC-32C as a whole
        checked[:] = b"\1" * len(keys)
    with open(path, "rb") as f:
        for i in range(len(keys)) if order is None else order:
            if order is None and wanted is not None and i not in wanted:
                yield None
                continue
            key, start, length, crc = keys[i], offsets[i], sizes[i], crcs[i]
            try:
                if checked[i] and fields is not None:  # its bytes matched before: read only what is decoded
                    f.seek(start)
                    raw = _span_fields(f, start + length, shard, key, fields)
                else:
                    f.seek(start)
                    span = f.read(length)
                    if len(span) != length or f"{google_crc32c.value(span):08x}" != crc:
                        raise StoreError(f"shard {shard}, key {key}: bytes differ from the shard index's checksum (a "
                                         "damaged or replaced shard), so this sample cannot be trusted. Run "
                                         "`latentstore verify` and rebuild the shard (delete its group record, rerun "
                                         "the build command)")
                    checked[i] = 1
                    raw = _span_fields(_View(memoryview(span)), length, shard, key)
                yield _decode(shard, key, raw, fields, required, variant)
            except StoreError as exc:
                if not lenient:
                    raise
                yield ReadError(shard, key, str(exc))


def _span_fields(f, end: int, shard: str, key: str, fields: Container[str] | None = None) -> dict:
    """{field name: bytes} of the one sample whose tar bytes run from `f`'s position to `end` (its index
    span), read only for the names in `fields` (None: all); the others are listed with None, so the
    required fields are still checked."""
    raw = {}
    for _, got, ext, size in _walk(f, shard, verify=False, end=end):  # the span's CRC-32C matched: headers as written
        if got != key:
            raise StoreError(f"shard {shard}, key {key}: its index span holds member {got}.{ext}; the index "
                             "and the shard disagree (run `latentstore verify`)")
        field = _field(shard, key, ext)
        if field.name in raw:
            raise StoreError(f"shard {shard}, key {key}: duplicate member {key}.{ext}")
        raw[field.name] = _read(f, size, shard, f"{key}.{ext}") if fields is None or field.name in fields else None
    return raw


def iter_shard(path, shard: str, expected_samples: int | None = None,
               fields: tuple | None = None, required: tuple = REQUIRED_FIELDS,
               lenient: bool = False, wanted: Container[int] | None = None,
               record: dict | None = None, variant: int | None = None,
               order: list[int] | None = None, trusted: bool = False) -> Iterator[Sample | ReadError | None]:
    """Yield the samples of one shard as Samples (fields decoded, meta.json as a SampleMeta, `variant`
    as given: a tar shard does not record it).

    `fields` limits which fields are decoded (None: all). `wanted` (sample
    indices; None: all) leaves the others undecoded and unchecked: None is
    yielded in their place, so positions still count. Raises StoreError naming
    the shard (and key) on a damaged tar, a missing field, an undecodable field,
    or a sample count other than `expected_samples`. With ``lenient=True`` it
    yields a ReadError in place of a damaged sample and goes on; damage to the
    shard itself (unreadable tar, wrong count) comes last, as a ReadError with
    key None. With `record` (the manifest's shard entry: bytes, sha256, crc32c
    and its sample index) the file
    must match it before any sample is read. With `order` (sample indices), one record per index of
    it instead, in that order: each read when pulled where the shard's index serves it (a record given,
    fast CRC-32C), else all read first (store/sample.py in_order). `trusted`: the file matched `record`'s
    size and CRC-32C as a whole just before (a remote shard, checked on arrival in the cache), so its
    samples are not checked one by one again.
    """
    if order is not None and (record is None or not CRC32C_IS_FAST):
        yield from in_order(iter_shard(path, shard, expected_samples, fields, required, lenient, set(order),
                                       record, variant, trusted=trusted), order)
        return
    count = 0
    try:
        st = os.stat(path)
        if record is not None and st.st_size != record["bytes"]:
            raise StoreError(f"shard {shard}: {st.st_size} bytes, the manifest records {record['bytes']} "
                             "(truncated or replaced shard; run `latentstore verify` and rebuild it)")
        if record is not None and CRC32C_IS_FAST:
            yield from _indexed(Path(path), shard, record, st, fields, required, lenient, wanted, variant, order,
                                trusted)
            return
        if record is not None and not trusted and not check_once(path, record):  # no fast CRC-32C: sha256
            yield from _damaged(Path(path), shard, expected_samples, lenient)
            return
        for key, raw in _groups(Path(path), shard, wanted):
            count += 1
            if wanted is not None and count - 1 not in wanted:
                yield None
                continue
            try:
                yield _decode(shard, key, raw, fields, required, variant)
            except StoreError as exc:
                if not lenient:
                    raise
                yield ReadError(shard, key, str(exc))
        if expected_samples is not None and count != expected_samples:
            raise StoreError(
                f"shard {shard}: holds {count} samples, the manifest records {expected_samples} "
                f"(truncated or replaced shard; run `latentstore verify` and rebuild it)"
            )

    except OSError as exc:
        if not lenient:
            raise StoreError(f"shard {shard}: unreadable ({exc})") from exc
        yield ReadError(shard, None, f"shard {shard}: unreadable ({exc})")
    except StoreError as exc:
        exc = _while_written(Path(path), shard, exc)
        if not lenient:
            raise exc
        yield ReadError(shard, None, str(exc))


def _while_written(path: Path, shard: str, exc: StoreError) -> StoreError:
    """`exc`, or, when a build or add-teacher holds a lock on the store right now, the truth: the shard is being
    rewritten, not damaged (probed only on an error: no cost to a good read)."""
    writing = write_in_progress(path.parent.parent)
    return StoreError(f"shard {shard} changed while it was read: {writing}") if writing else exc


def _damaged(path: Path, shard: str, expected: int | None, lenient: bool) -> Iterator[ReadError]:
    """A shard whose digest differs: no sample is trusted. Strict: one error naming the keys it holds;
    lenient: an error per sample, with its key (so skip lists name them)."""
    why = ("bytes differ from the manifest's checksum (a damaged or replaced shard), so none of its samples can be "
           "trusted. Run `latentstore verify` and rebuild it (delete its group record, rerun the build command)")
    keys = [key for key, _ in iter_raw(path, shard, wanted=())]  # headers only; a damaged one raises here
    if not lenient:
        listed = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        raise StoreError(f"shard {shard}: {why}. Its keys: {listed or 'none'}")
    for key in keys[:expected]:
        yield ReadError(shard, key, f"shard {shard}, key {key}: {why}")
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
        yield key, _field_names(shard, key, members)


def _field_names(shard: str, key: str, members: dict) -> dict:
    """{member suffix: bytes} -> {field name: bytes}."""
    return {_field(shard, key, ext).name: data for ext, data in members.items()}


def _field(shard: str, key: str, ext: str):
    field = field_for_member(ext)
    if field is None:
        raise StoreError(f"shard {shard}, key {key}: unknown member suffix {ext!r}")
    return field


def _decode(shard: str, key: str, raw: dict, fields, required, variant: int | None) -> Sample:
    missing = [name for name in required if name not in raw]
    if missing:
        raise StoreError(f"shard {shard}, key {key}: missing field(s) {', '.join(missing)}")
    values, meta = {}, None
    for name, data in raw.items():
        if fields is None or name in fields:
            try:
                value = decode_field(name, data)
            except Exception as exc:
                raise StoreError(f"shard {shard}, key {key}: field {name} does not decode ({exc})") from exc
            if name == "meta":
                meta = SampleMeta.from_dict(value, f"shard {shard}, key {key}")
            else:
                values[name] = value
    return Sample(key, variant, values, meta, shard)
