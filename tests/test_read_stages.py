"""The reader's generator stages (latentstore/read/stages.py), each fed a plain list."""
import pytest
import torch

from latentstore.errors import StoreError
from latentstore.read.stages import Skipped, count_skips, pad_for_lockstep, read_units, to_items
from latentstore.store.sample import ReadError, Sample, in_order

SHARDS = [{"path": "a.tar", "samples": 2}, {"path": "b.tar", "samples": 3}, {"path": "c.tar", "samples": 1}]


def sample(s, i):
    return Sample(f"{SHARDS[s]['path'][0]}{i}", 0, {"label": i}, shard=SHARDS[s]["path"])


class Shards:
    """read(shard, order) over SHARDS, records by index as given (default: every sample good), one per index
    of `order`, each when pulled; logs the shards opened and closed and the records pulled."""

    def __init__(self, records=None):
        self.records, self.opened, self.pulled, self.closed = records or {}, [], [], []

    def __call__(self, s, order):
        self.opened.append((s, list(order)))
        records = self.records.get(s) or [sample(s, i) for i in range(SHARDS[s]["samples"])]
        try:
            for i in order:
                if i >= len(records):
                    return
                self.pulled.append((s, i))
                yield records[i]
        finally:
            self.closed.append(s)


def keys(events):
    return [e if isinstance(e, Skipped) else [x.key for x in e] for e in events]


def test_each_shard_is_opened_when_its_first_sample_is_due_and_read_as_its_units_come():
    windows = {0: [0, 1], 1: [0, 1], 2: [2]}
    units = [[(1, 2), (0, 0)], [(2, 0)], [(1, 0)]]
    read, prefetched = Shards(), []
    events = read_units(units, SHARDS, windows, read, prefetched.append)
    assert keys([next(events)]) == [["b2", "a0"]]
    assert read.pulled == [(1, 2), (0, 0)]  # the first unit's samples only, not its window's
    assert keys(events) == [["c0"], ["b0"]]
    assert read.opened == [(1, [2, 0]), (0, [0]), (2, [0])]  # each shard once, in the order of use
    assert prefetched == [(0, 1), (2,)]  # once per window, when its first shard opens
    assert read.closed == [0, 2, 1]  # each as soon as its last sample was pulled


def test_shards_still_open_are_closed_when_the_pass_ends_early():
    read = Shards()
    events = read_units([[(1, 0)], [(1, 1)]], SHARDS, {1: [1]}, read)
    next(events)
    events.close()
    assert read.closed == [1]


def test_a_damaged_sample_is_skipped_with_its_message_before_its_unit():
    bad = ReadError("b.tar", "b1", "shard b.tar, key b1: broken")
    read = Shards({1: [sample(1, 0), bad, sample(1, 2)]})
    events = list(read_units([[(1, 0)], [(1, 1)], [(1, 2)]], SHARDS, {1: [1]}, read))
    assert keys(events) == [["b0"], Skipped(["shard b.tar, key b1: broken"]), [], ["b2"]]


def test_damage_to_a_shard_loses_all_its_samples_still_to_come():
    read = Shards({1: [ReadError("b.tar", None, "b.tar: truncated")]})
    events = list(read_units([[(1, 0)], [(1, 2)], [(0, 1)]], SHARDS, {0: [0], 1: [1]}, read))
    assert keys(events) == [Skipped(["shard b.tar, sample #0 (key unknown): lost (b.tar: truncated)",
                                     "shard b.tar, sample #2 (key unknown): lost (b.tar: truncated)"]), [], [], ["a1"]]


def test_a_shard_that_ends_early_loses_the_samples_it_did_not_give():
    read = Shards({1: [sample(1, 0)]})
    events = list(read_units([[(1, 0)], [(1, 2)]], SHARDS, {1: [1]}, read))
    assert keys(events) == [["b0"], Skipped(["shard b.tar, sample #2 (key unknown): lost (the shard holds fewer samples "
                                             "than the manifest records)"]), []]


def test_in_order_gives_a_stored_order_reader_s_records_in_the_order_asked():
    a0, a2 = sample(1, 0), sample(1, 2)
    assert list(in_order([a0, None, a2], [2, 0])) == [a2, a0]
    damage = ReadError("b.tar", None, "b.tar: 2 samples, the manifest records 3")
    assert list(in_order([a0, None, a2, damage], [2, 0])) == [damage]  # read before it showed: not trusted
    assert list(in_order([a0, None], [0, 2])) == [a0]  # a missing index ends it: the caller counts the loss


def test_the_skip_budget_counts_per_pass_and_names_every_skip():
    skipped = []
    events = [["x"], Skipped(["m1"]), [], Skipped(["m2"]), ["y"], ["z"]]
    assert list(count_skips(events, 2, skipped)) == [(["x"], []), ([], ["m1"]), (["y"], ["m2"]), (["z"], [])]
    assert skipped == ["m1", "m2"]
    skipped = []
    with pytest.raises(StoreError, match="2 damaged samples, more than max_skips=1:\n  m1\n  m2\nRun `latentstore"):
        list(count_skips([Skipped(["m1", "m2"]), ["x"]], 1, skipped))


def test_lockstep_repeats_the_last_item_where_every_sample_was_skipped():
    units = [([], ["m1"]), (["a"], []), ([], ["m2"]), (["b"], [])]
    assert list(pad_for_lockstep(units, True, 0, [])) == [(["a"], ["m1"]), (["a"], ["m1"]), (["a"], ["m2"]),
                                                         (["b"], [])]
    # a single process yields what it read; the messages travel with the next item
    assert list(pad_for_lockstep(units, False, 0, [])) == [(["a"], ["m1"]), (["b"], ["m2"])]
    with pytest.raises(StoreError, match="Every sample of 1 item\\(s\\) of rank 3 was damaged"):
        list(pad_for_lockstep([([], ["m"])], True, 3, ["m"]))


def test_items_are_samples_or_collated_batches_with_their_skips():
    a = {"__key__": "a", "label": torch.tensor(1)}
    b = {"__key__": "b", "label": torch.tensor(2)}
    assert list(to_items([([a], [])], batched=False, lenient=False)) == [a]
    assert list(to_items([([a], ["m1", "m2"])], batched=False, lenient=True)) == [dict(a, __skipped__="m1\nm2")]
    (batch,) = to_items([([a, b], ["m"])], batched=True, lenient=True)
    assert batch["__key__"] == ["a", "b"] and batch["label"].tolist() == [1, 2] and batch["__skipped__"] == ["m"]
