"""The reader's generator stages after the order: read units, decode, skip budget, DDP lockstep padding, batches.

Each stage takes an iterator and yields, as webdataset's filters do, so each can be tested with a
list. Between `read_units` and `pad_for_lockstep` the stream holds one list of samples per item
of this worker (a sample, or a batch to be), with `Skipped` events where a unit's damaged
samples were set aside; `count_skips` turns those into (samples, messages) pairs. A sample is a
reader's `Sample` until `as_dict` (through `decode`) makes it the dict of tensors a dataset hands out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch

from ..errors import StoreError
from ..store.sample import ReadError, Sample
from .tensors import collate, to_tensors

#: The end of a message listing damaged samples: what to do about them.
REBUILD = "Run `latentstore verify` and rebuild the damaged shards."


@dataclass(frozen=True)
class Skipped:
    """Damaged samples set aside while a unit was read, one message each (naming shard and key)."""
    messages: list[str]


def read_units(units: list[list[tuple]], shards: list[dict], window_of: dict, read: Callable,
               before_window: Callable | None = None) -> Iterator:
    """Per unit (a list of (shard, index) pairs), the list of its samples that could be read.

    ``read(shard, order)`` yields one record of ``shards[shard]`` (a manifest record: "path",
    "samples") per index in `order`, in that order: a `Sample`, a `ReadError` naming its key, or a
    `ReadError` with key None (damage to the shard itself: none of its samples is trusted, and
    nothing more comes). `order` is this worker's indices of the shard in the order its units use
    them, and a record is pulled only when its unit is due, so where the reader is lazy (an indexed
    tar shard) the first item of a pass reads its own samples only, not its shuffle window's. A
    unit's damaged samples come as one `Skipped` before it. `before_window(window)` runs when the
    first shard of a window (`window_of`: shard -> its window) is opened (a remote store's prefetch).
    """
    uses: dict[tuple, int] = {}
    order_of: dict[int, list] = {}  # shard -> its indices in the order of first use
    for unit in units:
        for pair in unit:
            if pair not in uses:
                order_of.setdefault(pair[0], []).append(pair[1])
            uses[pair] = uses.get(pair, 0) + 1
    streams: dict[int, Iterator] = {}  # the shards being read: an open file each, closed once read out
    cursor = dict.fromkeys(order_of, 0)
    entered, cache = set(), {}
    try:
        for unit in units:
            samples, skipped = [], []
            for pair in unit:
                s = pair[0]
                if pair not in cache:
                    if s not in streams:
                        window = tuple(window_of[s])
                        if before_window is not None and window not in entered:
                            entered.add(window)
                            before_window(window)
                        streams[s] = iter(read(s, order_of[s]))
                    skipped += _pull(s, shards[s], streams[s], order_of[s], cursor, cache)
                    if cursor[s] == len(order_of[s]):
                        _close(streams.pop(s))
                sample = cache[pair]
                uses[pair] -= 1
                if uses[pair] == 0:
                    del cache[pair]
                if sample is not None:
                    samples.append(sample)
            if skipped:
                yield Skipped(skipped)
            yield samples
    finally:
        for stream in streams.values():
            _close(stream)


def _close(stream: Iterator) -> None:
    close = getattr(stream, "close", None)  # a generator: its reader's `with open(...)` ends now
    if close is not None:
        close()


def _pull(s: int, shard: dict, stream: Iterator, order: list, cursor: dict, cache: dict) -> list[str]:
    """Cache the next record of shard `s` (None: damaged) and return its damage messages; damage to the
    shard itself, or an early end, caches None for every sample of it still to come."""
    index = order[cursor[s]]
    record = next(stream, ReadError(shard["path"], None, "the shard holds fewer samples than the manifest records"))
    if isinstance(record, ReadError) and record.key is None:
        lost = order[cursor[s]:]
        cursor[s] = len(order)
        cache.update(((s, i), None) for i in lost)
        return [f"shard {shard['path']}, sample #{i} (key unknown): lost ({record.message})" for i in lost]
    cursor[s] += 1
    cache[(s, index)] = None if isinstance(record, ReadError) else record
    return [record.message] if isinstance(record, ReadError) else []


def decode(events: Iterable, convert: Callable) -> Iterator:
    """Each sample of each unit through `convert` (teacher maps, tensors); `Skipped` events pass."""
    for event in events:
        yield event if isinstance(event, Skipped) else [convert(sample) for sample in event]


def as_dict(sample: Sample, teacher, y_hat_dtype: torch.dtype | None) -> dict:
    """A sample as the dict a dataset hands out: {"__key__", "__shard__", field: tensor, "meta": dict},
    teacher maps decoded (teacher.decode), ŷ in `y_hat_dtype`."""
    return to_tensors(teacher.decode(sample.as_item()), y_hat_dtype)


def count_skips(events: Iterable, max_skips: int, skipped: list) -> Iterator[tuple[list, list]]:
    """(unit's samples, messages of samples skipped since the last unit) per unit; every skip is also
    appended to `skipped`, and a StoreError listing them is raised once more than `max_skips` were."""
    fresh = []
    for event in events:
        if not isinstance(event, Skipped):
            yield event, fresh
            fresh = []
            continue
        skipped += event.messages
        fresh = fresh + event.messages
        if len(skipped) > max_skips:
            listing = "\n  ".join(skipped[:20])
            raise StoreError(f"{len(skipped)} damaged samples, more than max_skips={max_skips}:\n  {listing}\n"
                             + REBUILD)


def pad_for_lockstep(units: Iterable[tuple[list, list]], lockstep: bool, rank: int, skipped: list):
    """(samples, skip messages) per item to yield. Under DDP (`lockstep`) every unit yields an item,
    so each rank yields as many as the others and their steps stay in lockstep: a unit whose samples
    were all skipped repeats the last item (or, before any, the first one read). Otherwise such a
    unit yields nothing; its messages go with the next item."""
    last, owed, pending = None, 0, []
    for samples, messages in units:
        pending = pending + messages
        if samples:
            last = samples
        elif not lockstep:
            continue
        elif last is None:
            owed += 1
            continue
        for _ in range(owed + 1):
            yield last, pending
        owed, pending = 0, []
    if owed:
        raise StoreError(f"Every sample of {owed} item(s) of rank {rank} was damaged and skipped, so this rank "
                         f"cannot yield as many items as the others:\n  " + "\n  ".join(skipped[:20]) + "\n"
                         + REBUILD)


def to_items(units: Iterable[tuple[list, list]], batched: bool, lenient: bool) -> Iterator[dict]:
    """The dataset's items: the unit's one sample, or its samples collated; with `lenient`, the
    messages of samples skipped since the last item under ``__skipped__`` (joined lines for a
    sample, a list for a batch)."""
    for samples, messages in units:
        item = collate(samples) if batched else samples[0]
        if lenient:
            item = dict(item, __skipped__=messages if batched else "\n".join(messages))
        yield item
