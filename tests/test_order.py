"""The epoch order (latentstore/read/order.py) on plain lists: windows, global order, rank and worker shares."""
import itertools

import numpy as np
import pytest

from latentstore.errors import ConfigError
from latentstore.read.order import (batch_units, cut_windows, epoch_order, rank_share, rank_slice,
                                    worker_share)

COUNTS = [3, 1, 4, 2, 5]  # samples per shard


def test_without_shuffle_the_order_is_store_order_one_shard_per_window():
    order = epoch_order(COUNTS, seed=3, epoch=7, shuffle=False, window=2)
    assert order.samples == [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (2, 1), (2, 2), (2, 3), (3, 0), (3, 1),
                             (4, 0), (4, 1), (4, 2), (4, 3), (4, 4)]
    assert order.windows == [[0], [1], [2], [3], [4]]


def test_shuffled_order_draws_shards_then_each_window_from_one_seeded_generator():
    order = epoch_order(COUNTS, seed=3, epoch=7, shuffle=True, window=2)
    rng = np.random.default_rng([3, 7])  # the reference, written out: numpy's draws in the documented sequence
    shards = list(rng.permutation(5))
    expected = []
    for w in (shards[0:2], shards[2:4], shards[4:]):
        pool = [(s, i) for s in w for i in range(COUNTS[s])]
        expected += [pool[j] for j in rng.permutation(len(pool))]
    assert order.windows == [shards[0:2], shards[2:4], shards[4:]]
    assert order.samples == expected


def test_shuffled_order_is_a_permutation_read_window_by_window():
    every = sorted((s, i) for s, n in enumerate(COUNTS) for i in range(n))
    orders = {}
    for seed, epoch in itertools.product((0, 1), (0, 1, 2)):
        order = epoch_order(COUNTS, seed, epoch, shuffle=True, window=2)
        assert sorted(order.samples) == every
        assert sorted(s for w in order.windows for s in w) == [0, 1, 2, 3, 4]
        # G holds window 0's samples first, then window 1's, ...
        window_of = order.window_of()
        runs = [window_of[s] for s, _ in order.samples]
        assert [w for w, _ in itertools.groupby(runs)] == order.windows
        assert order == epoch_order(COUNTS, seed, epoch, shuffle=True, window=2)  # a function of its arguments
        orders[seed, epoch] = order.samples
    assert len({tuple(o) for o in orders.values()}) == len(orders)  # seed and epoch each change it


def test_cut_windows():
    assert cut_windows([4, 0, 2, 1, 3], 2) == [[4, 0], [2, 1], [3]]
    assert cut_windows([4, 0], 5) == [[4, 0]]
    assert cut_windows([], 3) == []


@pytest.mark.parametrize("total,world", [(10, 3), (9, 3), (2, 3), (7, 1)])
def test_rank_slices_cover_the_order_as_documented(total, world):
    order = list(range(total))
    drop = [] if total < world else [x for r in range(world) for x in rank_share(order, r, world, "drop")]
    pad = [x for r in range(world) for x in rank_share(order, r, world, "pad")]
    keep = [rank_share(order, r, world, "keep") for r in range(world)]
    n = total // world
    assert drop == order[:world * n]
    assert pad == (order + order)[:world * -(-total // world)]
    assert [x for share in keep for x in share] == order
    assert max(map(len, keep)) - min(map(len, keep)) <= 1
    assert len({len(rank_share(order, r, world, "pad")) for r in range(world)}) == 1  # same steps on every rank


def test_rank_slice_refuses_what_cannot_be_split():
    assert rank_slice(10, 1, 3, "drop") == range(3, 6)
    assert rank_slice(10, 2, 3, "pad") == range(8, 12)
    assert rank_slice(10, 2, 3, "keep") == range(6, 10)
    with pytest.raises(ConfigError, match="2 samples cannot be split over 3 ranks"):
        rank_slice(2, 0, 3, "drop")
    with pytest.raises(ConfigError, match="Invalid remainder 'odd': choose drop, pad, keep"):
        rank_slice(2, 0, 1, "odd")


def test_batch_units():
    assert batch_units(["a", "b", "c"], None, drop_last=True) == [["a"], ["b"], ["c"]]
    assert batch_units(list("abcde"), 2, drop_last=False) == [["a", "b"], ["c", "d"], ["e"]]
    assert batch_units(list("abcde"), 2, drop_last=True) == [["a", "b"], ["c", "d"]]
    assert batch_units([], 2, drop_last=False) == []


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_workers_dealt_in_turn_give_back_the_sequence(workers):
    units = list(range(11))
    shares = [worker_share(units, w, workers) for w in range(workers)]
    # the DataLoader takes one item from each worker in turn
    dealt = [share[i] for i in range(max(map(len, shares))) for share in shares if i < len(share)]
    assert dealt == units
    # a second epoch in the same pass continues the turn where the first left off
    second = list(range(100, 107))
    shares = [worker_share(second, w, workers, before=len(units)) for w in range(workers)]
    position = {x: (len(units) + i) % workers for i, x in enumerate(second)}
    assert all(position[x] == w for w, share in enumerate(shares) for x in share)
