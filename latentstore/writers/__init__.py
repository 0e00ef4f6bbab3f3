"""Store writers, one module per backend. Each commits whole units atomically."""
from .webdataset import ShardGroupWriter
from .zarr import ZarrGroupWriter


def _webdataset(store, split, group, variants, layout):
    return ShardGroupWriter(store, split, group, variants)


#: --format -> writer(store, split, group, variants, layout) for one item group; layout holds
#: item_keys (the group's items in order, rejects included), first_item, total_items, shard_size.
WRITERS = {"webdataset": _webdataset, "zarr": ZarrGroupWriter}

__all__ = ["ShardGroupWriter", "ZarrGroupWriter", "WRITERS"]
