"""Store readers, one module per backend, both yielding the same decoded sample dicts.

`read_dicts` hands those dicts on as they are (the dataset's path: it makes tensors of them);
`read_shard` gives the stages that rewrite a store (convert, add-teacher, verify) typed Samples.
"""
from pathlib import Path

from ..errors import StoreError
from .paths import store_file
from .sample import ReadError, Sample
from .tar.reader import iter_shard
from .zarr.reader import iter_unit

BACKENDS = ("webdataset", "zarr")


def read_dicts(store, backend: str, shard: dict, fields=None, lenient: bool = False, wanted=None,
               check_digest: bool = True):
    """The samples of one manifest shard (a tar shard or a Zarr unit) in stored order, as dicts
    {field: decoded value, "meta": its JSON dict, "__key__", "__shard__"}, its files checked against
    their record first: digests only with `check_digest`, which a caller turns off only right after
    checking them itself (a Zarr unit's sizes are checked either way: Zarr reads a missing chunk as
    zeros); None for an index not in `wanted` (left undecoded). Strict reads raise StoreError naming
    shard and key; with ``lenient=True`` a sample that cannot be trusted comes as {"__key__",
    "__shard__", "__error__"} instead (``__key__`` None: damage to the shard itself, after which
    nothing more comes)."""
    if backend == "webdataset":
        path = store_file(store, shard["path"], f"shard {shard['path']}")
        return iter_shard(path, shard["path"], shard["samples"], fields, lenient=lenient,
                          wanted=wanted, record=shard if check_digest else None)
    if backend == "zarr":
        return iter_unit(Path(store), shard, fields, lenient, wanted=wanted, check_digest=check_digest)
    raise StoreError(f"{store} uses backend {backend!r}; this latentstore reads {', '.join(BACKENDS)}")


def read_samples(store, backend: str, shard: dict, fields=None, lenient: bool = False, wanted=None,
                 check_digest: bool = True):
    """`read_dicts` as typed records: a Sample, a ReadError (lenient reads), or None outside `wanted`."""
    for read in read_dicts(store, backend, shard, fields, lenient, wanted, check_digest):
        if read is None:
            yield None
        elif "__error__" in read:
            yield ReadError(read["__shard__"], read["__key__"], read["__error__"])
        else:
            yield Sample.from_read(read, shard["variant"])


def read_shard(store, backend: str, shard: dict, check_digest: bool = True):
    """The Samples of one manifest shard in stored order, every field decoded (strict: StoreError
    naming shard and key on any damage; digests as in `read_dicts`)."""
    for read in read_dicts(store, backend, shard, check_digest=check_digest):
        yield Sample.from_read(read, shard["variant"])


__all__ = ["BACKENDS", "iter_shard", "iter_unit", "read_dicts", "read_samples", "read_shard"]
