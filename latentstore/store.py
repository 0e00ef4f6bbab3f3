"""Reading a store as a torch IterableDataset: manifest first, then strict shard reads."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .errors import ConfigError
from .format import FIELDS, read_manifest
from .readers import iter_shard

DEFAULT_FIELDS = ("y_hat", "label")


def pick_split(manifest: dict, split: str | None, store) -> str:
    splits = sorted(manifest["splits"])
    if split is None:
        if len(splits) != 1:
            raise ConfigError(f"{store} holds splits {', '.join(splits)}: pass split=...")
        return splits[0]
    if split not in manifest["splits"]:
        raise ConfigError(f"{store} has no split {split!r}: it holds {', '.join(splits)}")
    return split


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def to_tensors(sample: dict, y_hat_dtype: torch.dtype = torch.float32) -> dict:
    """numpy fields -> tensors (ŷ in `y_hat_dtype`, integer symbols widened to int32)."""
    out = {}
    for name, value in sample.items():
        if isinstance(value, np.ndarray):
            t = torch.from_numpy(value)
            if name == "y_hat":
                t = t.to(y_hat_dtype)
            elif not t.is_floating_point():
                t = t.to(torch.int32)
            out[name] = t
        elif name == "label":
            out[name] = torch.tensor(value, dtype=torch.int64)
        else:
            out[name] = value
    return out


class LatentDataset(IterableDataset):
    """The samples of one split, streamed from its shards with strict checks.

    variant: which stored augmentation variant to read; None (default) reads
    variant ``epoch % K`` so that epoch e sees variant e mod K (call set_epoch).
    Shards are divided between ranks (torch.distributed, or RANK/WORLD_SIZE)
    and DataLoader workers. Every read error names the shard and key.
    """

    def __init__(self, path, split: str | None = None, variant: int | None = None,
                 fields=DEFAULT_FIELDS, y_hat_dtype: torch.dtype = torch.float32):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.split = pick_split(self.manifest, split, self.path)
        self.info = self.manifest["splits"][self.split]
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ConfigError(f"Unknown fields {sorted(unknown)}: choose from {', '.join(FIELDS)}")
        if variant is not None and not 0 <= variant < self.info["variants"]:
            raise ConfigError(f"variant {variant} out of range: {self.path} stores {self.info['variants']}")
        self.fields, self.variant, self.y_hat_dtype = tuple(fields), variant, y_hat_dtype
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def current_variant(self) -> int:
        return self.variant if self.variant is not None else self.epoch % self.info["variants"]

    def shards(self) -> list:
        return [s for s in self.info["shards"] if s["variant"] == self.current_variant]

    def __len__(self) -> int:
        return sum(s["samples"] for s in self.shards())

    def __iter__(self):
        rank, world = _rank_and_world()
        worker = get_worker_info()
        wid, nworkers = (worker.id, worker.num_workers) if worker else (0, 1)
        mine = self.shards()[rank * nworkers + wid::world * nworkers]
        for shard in mine:
            for sample in iter_shard(self.path / shard["path"], shard["path"], shard["samples"], self.fields):
                yield to_tensors(sample, self.y_hat_dtype)


def open_store(path, split: str | None = None, **kwargs) -> LatentDataset:
    """Open one split of a store for reading; kwargs go to LatentDataset."""
    return LatentDataset(path, split, **kwargs)
