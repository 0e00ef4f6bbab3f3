"""Store readers, one module per backend, both yielding the same typed records: Samples, ReadErrors.

`read_samples` is the one entry point: the dataset reads with it (leniently, only the samples it
wants), and `read_shard` is its strict form for the stages that rewrite or check a store
(convert, add-teacher, verify).
"""
from pathlib import Path

from ..errors import StoreError
from .paths import store_file
from .sample import ReadError, Sample, in_order
from .tar.reader import iter_shard
from .zarr.reader import iter_unit

BACKENDS = ("webdataset", "zarr")


def read_samples(store, backend: str, shard: dict, fields=None, lenient: bool = False, wanted=None,
                 check_digest: bool = True, order: list[int] | None = None, checked_whole: bool = False):
    """The samples of one manifest shard (a tar shard or a Zarr unit) in stored order, as Samples
    (fields decoded, meta.json as a SampleMeta where `fields` asks for it), its files checked
    against their record first: digests only with `check_digest`, which a caller turns off only
    right after checking them itself (a Zarr unit's sizes are checked either way: Zarr reads a
    missing chunk as zeros); None for an index not in `wanted` (left undecoded). Strict reads raise
    StoreError naming shard and key; with ``lenient=True`` a sample that cannot be trusted comes as
    a ReadError instead (key None: damage to the shard itself, after which nothing more comes).
    With `order` (sample indices), one record per index of it instead, in that order: lazily for a tar
    shard (each when pulled), at once for a Zarr unit (its chunks hold many samples).
    `checked_whole`: the files read matched their manifest records (size, CRC-32C) as a whole just
    before, as a remote store's are on arrival in the cache; their samples and digests are not checked
    again (a tar shard still goes by its sample index, a Zarr unit's sizes are still checked)."""
    if backend == "webdataset":
        path = store_file(store, shard["path"], f"shard {shard['path']}")
        return iter_shard(path, shard["path"], shard["samples"], fields, lenient=lenient, wanted=wanted,
                          record=shard if check_digest else None, variant=shard["variant"], order=order,
                          trusted=checked_whole)
    if backend == "zarr":
        check_digest = check_digest and not checked_whole
        if order is not None:
            return in_order(iter_unit(Path(store), shard, fields, lenient, wanted=set(order),
                                      check_digest=check_digest), order)
        return iter_unit(Path(store), shard, fields, lenient, wanted=wanted, check_digest=check_digest)
    raise StoreError(f"{store} uses backend {backend!r}; this latentstore reads {', '.join(BACKENDS)}")


def read_shard(store, backend: str, shard: dict, check_digest: bool = True):
    """The Samples of one manifest shard in stored order, every field decoded (strict: StoreError
    naming shard and key on any damage; digests as in `read_samples`)."""
    return read_samples(store, backend, shard, check_digest=check_digest)


__all__ = ["BACKENDS", "ReadError", "Sample", "iter_shard", "iter_unit", "read_samples", "read_shard"]
