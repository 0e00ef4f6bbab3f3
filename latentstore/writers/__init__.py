"""Store writers, one module per backend. Each commits whole units atomically."""
from .webdataset import ShardGroupWriter

__all__ = ["ShardGroupWriter"]
