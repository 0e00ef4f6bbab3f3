"""The container for a coder's nested bitstreams (e.g. ELIC's per-group strings), readable without latentstore.

Layout (docs/FORMAT.md "Nested strings"), all integers unsigned 32-bit little-endian::

    b"LSS1" | header length | header (UTF-8 JSON) | stream count | (length, bytes) per stream

The header holds ``{"shape": ...}``: the ``shape`` that ``model.compress()`` returned (a list of ints,
or for ELIC a dict of lists), as JSON, so ``model.decompress([[s] for s in streams], shape)`` decodes
it. The streams are ``compress()["strings"][k][0]`` in order: batch 1, byte for byte.
"""
from __future__ import annotations

import json
import struct

from .errors import StoreError

MAGIC = b"LSS1"
_U32 = struct.Struct("<I")


def pack(streams: list[bytes], shape) -> bytes:
    """One image's streams and compress() shape as one byte string."""
    header = json.dumps({"shape": _jsonable(shape)}, sort_keys=True, separators=(",", ":")).encode()
    parts = [MAGIC, _U32.pack(len(header)), header, _U32.pack(len(streams))]
    for s in streams:
        parts += [_U32.pack(len(s)), bytes(s)]
    return b"".join(parts)


def unpack(blob: bytes, where: str = "strings") -> tuple[list[bytes], object]:
    """(streams, shape) from `pack`'s bytes; `where` names the sample in the error."""
    try:
        if blob[:4] != MAGIC:
            raise ValueError(f"magic {blob[:4]!r} is not {MAGIC!r}")
        (hlen,) = _U32.unpack_from(blob, 4)
        pos = 8 + hlen
        shape = json.loads(blob[8:pos])["shape"]
        (count,) = _U32.unpack_from(blob, pos)
        pos += 4
        streams = []
        for _ in range(count):
            (n,) = _U32.unpack_from(blob, pos)
            streams.append(blob[pos + 4:pos + 4 + n])
            if len(streams[-1]) != n:
                raise ValueError("truncated stream")
            pos += 4 + n
        if pos != len(blob):
            raise ValueError(f"{len(blob) - pos} trailing bytes")
    except (ValueError, struct.error, KeyError) as exc:
        raise StoreError(f"{where}: not a latentstore strings container ({exc}); rebuild the store") from exc
    return streams, shape


def payload_bytes(streams: list[bytes]) -> int:
    """The coded size: the streams alone (the container's framing is not part of the rate)."""
    return sum(len(s) for s in streams)


def _jsonable(shape):
    if isinstance(shape, dict):
        return {k: _jsonable(v) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)) and shape and not isinstance(shape[0], int):
        return [_jsonable(v) for v in shape]
    return [int(v) for v in shape]
