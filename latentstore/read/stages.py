"""The reader's generator stages after the order: read windows, decode, skip budget, DDP lockstep padding, batches.

Each stage takes an iterator and yields, as webdataset's filters do, so each can be tested with a
list. Between `read_windows` and `pad_for_lockstep` the stream holds one list of samples per item
of this worker (a sample, or a batch to be), with `Skipped` events where a window's damaged
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
    """Damaged samples set aside while a window was read, one message each (naming shard and key)."""
    messages: list[str]


def read_windows(units: list[list[tuple]], shards: list[dict], window_of: dict, read: Callable,
                 before_window: Callable | None = None) -> Iterator:
    """Per unit (a list of (shard, index) pairs), the list of its samples that could be read.

    Each window of shards (`window_of`: shard -> its window) is read once, when the first sample it
    holds is due, and only samples still to be handed out are kept. ``read(shard, wanted)`` yields
    the records of ``shards[shard]`` (a manifest record: "path", "samples") in stored order: a
    `Sample`, a `ReadError`, or None for an index not in `wanted`. A window's damaged samples come
    as one `Skipped` before the unit that needed it. `before_window(window)` runs before a window
    is read (a remote store's prefetch)."""
    uses: dict[tuple, int] = {}
    mine: dict[int, set] = {}  # shard -> the sample indices wanted from it
    for unit in units:
        for pair in unit:
            uses[pair] = uses.get(pair, 0) + 1
            mine.setdefault(pair[0], set()).add(pair[1])
    cache: dict[tuple, Sample | None] = {}
    for unit in units:
        samples = []
        for pair in unit:
            if pair not in cache:
                window = window_of[pair[0]]
                if before_window is not None:
                    before_window(window)
                skipped = [m for s in window for m in _keep(s, shards[s], read(s, mine.get(s, ())), uses, cache)]
                if skipped:
                    yield Skipped(skipped)
            sample = cache[pair]
            uses[pair] -= 1
            if uses[pair] == 0:
                del cache[pair]
            if sample is not None:
                samples.append(sample)
        yield samples


def _keep(s: int, shard: dict, records: Iterable, uses: dict, cache: dict) -> list[str]:
    """Cache the samples of shard `s` still to be used (None: damaged); return the damage messages.
    Damage to the shard itself loses all of its samples, also those read before it showed."""
    messages, seen, damage = [], 0, "the shard holds fewer samples than the manifest records"
    for index, record in enumerate(records):
        seen = index + 1
        if record is None:
            continue
        if isinstance(record, ReadError):
            if record.key is None:  # damage to the shard itself: none of its samples is kept
                seen, damage = 0, record.message
                break
            if uses.get((s, index)):
                messages.append(record.message)
                cache[(s, index)] = None
            continue
        if uses.get((s, index)):
            cache[(s, index)] = record
    for index in range(seen, shard["samples"]):
        if uses.get((s, index)) and not ((s, index) in cache and cache[(s, index)] is None):
            known = cache.get((s, index))  # read before the shard's damage showed: not trusted
            key = f"key {known.key}" if known else "key unknown"
            messages.append(f"shard {shard['path']}, sample #{index} ({key}): lost ({damage})")
            cache[(s, index)] = None
    return messages


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
