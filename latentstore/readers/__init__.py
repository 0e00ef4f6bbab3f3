"""Store readers, one module per backend, all yielding the same sample dicts."""
from .webdataset import iter_shard

__all__ = ["iter_shard"]
