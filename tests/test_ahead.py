"""A DataLoader worker begins the pass that usually follows while the current one ends (latentstore/read/ahead.py)."""
import pytest
from torch.utils.data import DataLoader

from latentstore import open_store
from latentstore.read.ahead import Ahead, following

from conftest import tiny_store


def counting(log: list):
    """make(plan) for Ahead: items plan[0]*10, +1, +2; each read is logged."""
    def make(plan):
        def items():
            for i in range(3):
                log.append((plan, i))
                yield plan[0] * 10 + i
        return items()
    return make


def test_the_pass_begun_ahead_is_taken_when_it_is_the_one_asked_for():
    log, ahead = [], Ahead()
    make = counting(log)
    ahead.start((2, 0, 3), make)
    ahead._thread.join()
    assert log == [((2, 0, 3), 0)]  # the first item only
    assert list(ahead.take((2, 0, 3), make)) == [20, 21, 22]
    assert log == [((2, 0, 3), i) for i in range(3)]  # nothing read twice


def test_another_pass_discards_the_one_begun_ahead():
    log, ahead = [], Ahead()
    make = counting(log)
    ahead.start((2, 0, 3), make)
    assert list(ahead.take((2, 5, 3), make)) == [20, 21, 22]
    assert log[-3:] == [((2, 5, 3), i) for i in range(3)]
    assert list(ahead.take((4, 0, 5), make)) == [40, 41, 42]  # nothing begun: a fresh pass


def test_an_error_of_the_pass_begun_ahead_is_raised_where_it_is_taken():
    def make(plan):
        def items():
            raise ValueError("damaged shard")
            yield
        return items()
    ahead = Ahead()
    ahead.start((1, 0, 2), make)
    ahead._thread.join()  # the thread ended quietly
    with pytest.raises(ValueError, match="damaged shard"):
        ahead.take((1, 0, 2), make)


def test_the_following_pass_runs_as_many_epochs_again():
    assert following((0, 0, 1)) == (1, 0, 2)
    assert following((3, 7, 6)) == (6, 0, 9)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_persistent_workers_give_the_same_batches_whether_the_guess_was_right_or_not(tiny_folder, tmp_path, context):
    store = tiny_store(tiny_folder, tmp_path / "store", variants=3, shard_size=1)
    ds = open_store(store, shuffle=True, seed=3, shuffle_window=2, batch_size=2, drop_last=True)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True, multiprocessing_context=context)
    for plan in ((0, 0, 2), (2, 0, 4), (4, 1, 5), (5, 0, 6), (6, 0, 8), (5, 0, 6)):  # followed, or not
        ds.set_epoch(plan[0], plan[1], until=plan[2])
        fresh = open_store(store, shuffle=True, seed=3, shuffle_window=2, batch_size=2, drop_last=True)
        fresh.set_epoch(plan[0], plan[1], until=plan[2])
        assert [b["__key__"] for b in loader] == [b["__key__"] for b in fresh], plan
