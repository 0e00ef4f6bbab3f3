"""The container for a coder's nested bitstreams (e.g. ELIC's per-group strings), readable without latentstore.

Layout (docs/FORMAT.md "Nested strings"), all integers unsigned 32-bit little-endian::

    b"LSS1" | header length | header (UTF-8 JSON) | stream count | (length, bytes) per stream

The header holds ``{"shape": ...}``: the ``shape`` that ``model.compress()`` returned (a list of ints,
or for ELIC a dict of lists), as JSON, so ``model.decompress([[s] for s in streams], shape)`` decodes
it. The streams are ``compress()["strings"][k][0]`` in order: batch 1, byte for byte.
"""
from __future__ import annotations

import json
import operator
import struct

from ..errors import ConfigError, StoreError

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


def coded_bits(y_string: bytes, z_string: bytes | None, container: bool) -> int:
    """Bits of one sample's bitstreams: y and z, or a container's streams (`container`: the store's
    coder is on the generic path, manifest ``coder.path``)."""
    if container:
        return 8 * payload_bytes(unpack(y_string)[0])
    return 8 * (len(y_string) + len(z_string or b""))


def _jsonable(shape):
    """compress()'s shape as JSON: dicts with string keys, lists (torch.Size, tuples), ints, floats, strings."""
    if isinstance(shape, dict) and all(isinstance(k, str) for k in shape):
        return {k: _jsonable(v) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)):
        return [_jsonable(v) for v in shape]
    if isinstance(shape, (bool, str, float)) or shape is None:
        return shape
    try:
        return operator.index(shape)  # int, numpy and 0-d torch integers
    except TypeError:
        raise ConfigError(f"the coder's compress() returned a shape holding {type(shape).__name__}, which the "
                          "strings container cannot record (it keeps JSON: dicts with string keys, lists, "
                          "numbers, strings)") from None
