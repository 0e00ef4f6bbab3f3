"""How a split is read: `ReadOptions`, the one list of open_store's options, their defaults and their checks."""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .order import REMAINDERS

DEFAULT_FIELDS = ("y_hat", "label")


@dataclass(frozen=True)
class ReadOptions:
    """Options:
        fields: the fields each sample carries, a tuple of names or one name: y_hat, symbols,
            y_string, z_string, label, meta, and what the store was built with (means, scales,
            z_symbols, label_map, teacher_<tap>). A field the split does not hold is an error.
        variant: None reads variant ``epoch % K`` (call ``set_epoch``); an int pins one.
        y_hat_dtype / teacher_dtype: dtype of ŷ and of the teacher maps in the samples. None: as
            stored (int8 teacher maps dequantized to float32), the fewest bytes per batch for a
            loader that widens on the GPU (the trainers and evals do).
        seed, shuffle, shuffle_window: the epoch order, a function of (seed, epoch) only; shards
            are shuffled, then the samples of each window of ``shuffle_window`` shards.
        batch_size, drop_last: yield collated batches (use ``DataLoader(ds, batch_size=None)``).
        remainder: "drop" or "pad", so that every rank reads the same number of samples; "keep" reads
            every sample exactly once (ranks may differ by one sample: evaluation).
        start: per-rank sample offset to resume an epoch from.
        rank, world: override torch.distributed (or RANK / WORLD_SIZE; read when the dataset is made
            and at every set_epoch: DataLoader workers cannot see the process group).
        max_skips: 0 (default) fails on the first damaged sample; N > 0 skips up to N, named.
        storage_options: passed to fsspec for a URL (e.g. ``{"endpoint_url": ..., "anon": True}``).
        cache_dir: where a remote store's shards are mirrored (default ``$LATENTSTORE_CACHE``, else
            ``~/.cache/latentstore/stores``); see latentstore/store/remote.py.
    """
    fields: tuple | str = DEFAULT_FIELDS
    variant: int | None = None
    y_hat_dtype: torch.dtype | None = torch.float32
    teacher_dtype: torch.dtype | None = torch.float32
    seed: int = 0
    shuffle: bool = False
    shuffle_window: int = 4
    batch_size: int | None = None
    drop_last: bool = False
    remainder: str = "drop"
    start: int = 0
    rank: int | None = None
    world: int | None = None
    max_skips: int = 0
    storage_options: dict | None = None
    cache_dir: object = None

    def check(self) -> None:
        """ConfigError naming the first option out of its range (those that need no store to judge)."""
        batch_size = 1 if self.batch_size is None else self.batch_size
        for name, value, low in (("shuffle_window", self.shuffle_window, 1), ("batch_size", batch_size, 1),
                                 ("start", self.start, 0), ("max_skips", self.max_skips, 0)):
            if value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}")
        if self.remainder not in REMAINDERS:
            raise ConfigError(f"Invalid remainder {self.remainder!r}: choose {', '.join(REMAINDERS)}")


def option_parameters() -> list[inspect.Parameter]:
    """ReadOptions' fields as keyword-only parameters: what open_store's signature shows."""
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
            for f in dataclasses.fields(ReadOptions)]
