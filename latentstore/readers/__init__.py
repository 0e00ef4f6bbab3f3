"""Store readers, one module per backend, all yielding the same sample dicts."""
from pathlib import Path

from ..errors import StoreError
from .webdataset import iter_raw, iter_shard
from .zarr import iter_unit


BACKENDS = ("webdataset", "zarr")


def read_shard(store, backend: str, shard: dict, fields=None, lenient: bool = False, wanted=None):
    """The samples of one manifest shard (a tar shard or a Zarr unit) in stored order, each file
    checked against its record first: {field: decoded value, "__key__", "__shard__"}, None for an
    index not in `wanted` (left undecoded); strict reads raise StoreError naming shard and key, and
    with ``lenient=True`` a damaged sample comes as {"__key__", "__shard__", "__error__"} instead."""
    if backend == "webdataset":
        return iter_shard(Path(store) / shard["path"], shard["path"], shard["samples"], fields, lenient=lenient,
                          wanted=wanted, record=shard)
    if backend == "zarr":
        return iter_unit(Path(store), shard, fields, lenient, wanted=wanted)
    raise StoreError(f"{store} uses backend {backend!r}; this latentstore reads {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "iter_raw", "iter_shard", "iter_unit", "read_shard"]
