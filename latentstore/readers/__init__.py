"""Store readers, one module per backend, both yielding the same decoded sample dicts; `read_shard`
is the entry point the stages use, and hands out typed Samples."""
from pathlib import Path

from ..errors import StoreError
from ..sample import Damaged, Sample
from .webdataset import iter_shard
from .zarr import iter_unit


BACKENDS = ("webdataset", "zarr")


def read_shard(store, backend: str, shard: dict, fields=None, lenient: bool = False, wanted=None,
               check_digest: bool = True):
    """The Samples of one manifest shard (a tar shard or a Zarr unit) in stored order, its files
    checked against their record first (a tar shard's digest only with `check_digest`); None for
    an index not in `wanted` (left undecoded). Strict reads raise StoreError naming shard and key;
    with ``lenient=True`` a sample that cannot be trusted comes as a Damaged instead."""
    if backend == "webdataset":
        read = iter_shard(Path(store) / shard["path"], shard["path"], shard["samples"], fields, lenient=lenient,
                          wanted=wanted, record=shard if check_digest else None)
    elif backend == "zarr":
        read = iter_unit(Path(store), shard, fields, lenient, wanted=wanted)
    else:
        raise StoreError(f"{store} uses backend {backend!r}; this latentstore reads {', '.join(BACKENDS)}")
    for sample in read:
        if sample is None:
            yield None
        elif "__error__" in sample:
            yield Damaged(sample["__key__"], sample["__shard__"], sample["__error__"])
        else:
            yield Sample.from_read(sample, shard["variant"])


__all__ = ["BACKENDS", "iter_shard", "iter_unit", "read_shard"]
