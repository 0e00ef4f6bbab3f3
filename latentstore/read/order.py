"""The epoch order as pure functions of lists: shard windows, the global order, and each rank's and worker's share.

One function draws the epoch's permutations (`epoch_order`: the shard permutation, then one per
window, all from one generator seeded by (seed, epoch)); every other function takes what it drew
as an argument, so no two functions have to draw the same numbers in step. Nothing here reads a
store: shards are indices into the epoch's list of shard records, samples (shard, index) pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

REMAINDERS = ("drop", "pad", "keep")


@dataclass(frozen=True)
class EpochOrder:
    """What one epoch reads, in order: `windows` are the shard indices read together (a shuffle
    window; one shard each without shuffle), `samples` the global order G of (shard, index) pairs."""
    windows: list[list[int]]
    samples: list[tuple[int, int]]

    def window_of(self) -> dict[int, list[int]]:
        """Shard index -> the window it is read in."""
        return {s: window for window in self.windows for s in window}


def epoch_order(counts: list[int], seed: int, epoch: int, shuffle: bool, window: int) -> EpochOrder:
    """The epoch's windows and global order for shards holding `counts` samples, a function of its
    arguments only: shuffled, the shards are permuted, cut into windows of `window` consecutive
    shards, and the samples of each window permuted; otherwise store order."""
    if not shuffle:
        return EpochOrder([[s] for s in range(len(counts))], [(s, i) for s, n in enumerate(counts) for i in range(n)])
    rng = np.random.default_rng([seed, epoch])
    windows = cut_windows([int(s) for s in rng.permutation(len(counts))], window)
    samples = []
    for shards in windows:  # in read order: each window's permutation is the generator's next draw
        pool = [(s, i) for s in shards for i in range(counts[s])]
        samples.extend(pool[int(j)] for j in rng.permutation(len(pool)))
    return EpochOrder(windows, samples)


def cut_windows(shards: list, size: int) -> list[list]:
    """`shards` cut into runs of `size` consecutive ones (the last may be shorter)."""
    return [shards[w:w + size] for w in range(0, len(shards), size)]


def rank_slice(total: int, rank: int, world: int, remainder: str) -> range:
    """Positions in G of rank `rank`'s samples (positions >= total wrap to the start of G)."""
    if remainder not in REMAINDERS:
        raise ConfigError(f"Invalid remainder {remainder!r}: choose {', '.join(REMAINDERS)}")
    if remainder == "keep":
        return range(rank * total // world, (rank + 1) * total // world)
    per_rank = total // world if remainder == "drop" else -(-total // world)
    if per_rank == 0:
        raise ConfigError(f"{total} samples cannot be split over {world} ranks with remainder='drop': "
                          "use remainder='pad' or fewer ranks")
    return range(rank * per_rank, (rank + 1) * per_rank)


def rank_share(order: list, rank: int, world: int, remainder: str) -> list:
    """Rank `rank`'s items of `order`, G[rank_slice] with positions past the end wrapping ("pad")."""
    return [order[p % len(order)] for p in rank_slice(len(order), rank, world, remainder)]


def batch_units(samples: list, batch_size: int | None, drop_last: bool) -> list[list]:
    """`samples` as the items a rank yields: one sample each, or batches of `batch_size` (the last
    one shorter, or dropped with `drop_last`)."""
    if batch_size is None:
        return [[sample] for sample in samples]
    units = [samples[i:i + batch_size] for i in range(0, len(samples), batch_size)]
    if drop_last and units and len(units[-1]) < batch_size:
        units.pop()
    return units


def worker_share(units: list, worker: int, workers: int, before: int = 0) -> list:
    """Worker `worker`'s items of `units`, item i of a pass going to worker i mod `workers`, where
    `before` items of the same pass came before `units` (the DataLoader takes one item from each
    worker in turn, so the pass's sequence does not depend on the worker count)."""
    return units[(worker - before) % workers::workers]
