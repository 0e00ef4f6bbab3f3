"""Store readers, one module per backend, all yielding the same sample dicts."""
from .webdataset import iter_raw, iter_shard
from .zarr import iter_unit

__all__ = ["iter_raw", "iter_shard", "iter_unit"]
