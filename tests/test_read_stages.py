"""The reader's generator stages (latentstore/read/stages.py), each fed a plain list."""
import pytest
import torch

from latentstore.errors import StoreError
from latentstore.read.stages import Skipped, count_skips, pad_for_lockstep, read_windows, to_items
from latentstore.store.sample import ReadError, Sample

SHARDS = [{"path": "a.tar", "samples": 2}, {"path": "b.tar", "samples": 3}, {"path": "c.tar", "samples": 1}]


def sample(s, i):
    return Sample(f"{SHARDS[s]['path'][0]}{i}", 0, {"label": i}, shard=SHARDS[s]["path"])


class Shards:
    """read(shard, wanted) over SHARDS, records as given (default: every sample good); counts reads."""

    def __init__(self, records=None):
        self.records, self.reads = records or {}, []

    def __call__(self, s, wanted):
        self.reads.append((s, sorted(wanted)))
        records = self.records.get(s) or [sample(s, i) for i in range(SHARDS[s]["samples"])]
        return [r if isinstance(r, ReadError) or i in wanted else None for i, r in enumerate(records)]


def keys(events):
    return [e if isinstance(e, Skipped) else [x.key for x in e] for e in events]


def test_each_window_is_read_once_when_its_first_sample_is_due():
    windows = {0: [0, 1], 1: [0, 1], 2: [2]}
    units = [[(1, 2), (0, 0)], [(2, 0)], [(1, 0)]]
    read, prefetched = Shards(), []
    events = read_windows(units, SHARDS, windows, read, prefetched.append)
    assert keys(events) == [["b2", "a0"], ["c0"], ["b0"]]
    assert read.reads == [(0, [0]), (1, [0, 2]), (2, [0])]  # only the wanted samples, each shard once
    assert prefetched == [[0, 1], [2]]


def test_a_damaged_sample_is_skipped_with_its_message_before_the_unit():
    bad = ReadError("b.tar", "b1", "shard b.tar, key b1: broken")
    read = Shards({1: [sample(1, 0), bad, sample(1, 2)]})
    events = list(read_windows([[(1, 0)], [(1, 1)], [(1, 2)]], SHARDS, {1: [1]}, read))
    assert keys(events) == [Skipped(["shard b.tar, key b1: broken"]), ["b0"], [], ["b2"]]


def test_damage_to_a_shard_loses_all_its_wanted_samples_even_those_read_before():
    read = Shards({1: [sample(1, 0), ReadError("b.tar", None, "b.tar: truncated")]})
    events = list(read_windows([[(1, 0)], [(1, 2)], [(0, 1)]], SHARDS, {0: [0], 1: [1]}, read))
    assert keys(events) == [Skipped(["shard b.tar, sample #0 (key b0): lost (b.tar: truncated)",
                                     "shard b.tar, sample #2 (key unknown): lost (b.tar: truncated)"]),
                            [], [], ["a1"]]


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
