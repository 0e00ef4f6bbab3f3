"""Store writers, one module per backend, each driven by commit.GroupCommit for one item group:
``open()``, ``write(sample) -> {member suffix: bytes as a tar member}``, ``finish_variant(v)``, then
``commit(record) -> record`` or ``discard()``."""
from .tar.writer import ShardGroupWriter
from .zarr.writer import ZarrGroupWriter

#: --format -> writer(store, commit.GroupLayout)
WRITERS = {"webdataset": ShardGroupWriter, "zarr": ZarrGroupWriter}

__all__ = ["ShardGroupWriter", "ZarrGroupWriter", "WRITERS"]
