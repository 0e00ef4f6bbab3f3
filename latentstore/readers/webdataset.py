"""Strict reading of latentstore tar shards.

A tar file has no trailer, so a shard cut at a member boundary reads back
without any error from tarfile or webdataset. The strict reader therefore
checks every shard against the manifest: the sample count, the required
fields of every sample, and that each field decodes. Every error names the
shard and, where there is one, the sample key.
"""
from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Iterator

from ..errors import StoreError
from ..format import REQUIRED_FIELDS, decode_field, field_for_member


def _members(path: Path, shard: str) -> Iterator[tuple[str, str, bytes]]:
    """(key, member suffix, bytes) for each file member, in tar order."""
    try:
        with tarfile.open(path, mode="r|") as tar:
            for info in tar:
                # Members are read into memory, never extracted; still refuse anything
                # that is not "<key>.<suffix>" as a plain file, so no name can point elsewhere.
                if not info.isfile() or "/" in info.name or "\\" in info.name or info.name.startswith("."):
                    raise StoreError(f"shard {shard}: unexpected member {info.name!r} "
                                     f"(only plain files named <key>.<suffix> belong in a shard)")
                key, _, ext = info.name.partition(".")
                yield key, ext, tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise StoreError(f"shard {shard}: unreadable or truncated tar ({exc})") from exc


def iter_shard(path, shard: str, expected_samples: int | None = None,
               fields: tuple | None = None, required: tuple = REQUIRED_FIELDS,
               lenient: bool = False) -> Iterator[dict]:
    """Yield the samples of one shard as dicts {field: decoded value, "__key__", "__shard__"}.

    `fields` limits which fields are decoded (None: all). Raises StoreError naming
    the shard (and key) on a damaged tar, a missing field, an undecodable field,
    or a sample count other than `expected_samples`. With ``lenient=True`` it
    yields {"__key__", "__shard__", "__error__": message} in place of a damaged
    sample and goes on; damage to the shard itself (unreadable tar, wrong count)
    comes last, as such a dict with ``__key__`` None.
    """
    count = 0
    try:
        for key, raw in _groups(Path(path), shard):
            count += 1
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
    except StoreError as exc:
        if not lenient:
            raise
        yield {"__key__": None, "__shard__": shard, "__error__": str(exc)}


def iter_raw(path, shard: str) -> Iterator[tuple[str, dict]]:
    """(key, {member suffix: bytes}) per sample, in tar order, bytes untouched."""
    current, members = None, {}
    for key, ext, data in _members(Path(path), shard):
        if key != current:
            if current is not None:
                yield current, members
            current, members = key, {}
        if ext in members:
            raise StoreError(f"shard {shard}, key {key}: duplicate member {key}.{ext}")
        members[ext] = data
    if current is not None:
        yield current, members


def _groups(path: Path, shard: str) -> Iterator[tuple[str, dict]]:
    """(key, {field name: bytes}) per sample, in tar order."""
    for key, members in iter_raw(path, shard):
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
