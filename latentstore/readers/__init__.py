"""Store readers, one module per backend, all yielding the same sample dicts."""
from pathlib import Path

from ..errors import StoreError
from .webdataset import iter_raw, iter_shard
from .zarr import iter_unit


def read_shard(store, backend: str, shard: dict, fields=None, lenient: bool = False, wanted=None):
    """The samples of one manifest shard (a tar shard or a Zarr unit) in stored order, each file
    checked against its record first. See iter_shard for `fields`, `lenient` and `wanted`."""
    if backend == "webdataset":
        return iter_shard(Path(store) / shard["path"], shard["path"], shard["samples"], fields, lenient=lenient,
                          wanted=wanted, record=shard)
    if backend == "zarr":
        return iter_unit(Path(store), shard, fields, lenient, wanted=wanted)
    raise StoreError(f"{store} uses backend {backend!r}; this latentstore reads webdataset and zarr stores")


__all__ = ["iter_raw", "iter_shard", "iter_unit", "read_shard"]
