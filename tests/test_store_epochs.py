"""set_epoch reaches DataLoader workers that persist across epochs, and one pass can run through several epochs."""
import pytest
from torch.utils.data import DataLoader

from latentstore import open_store
from latentstore.errors import ConfigError

from conftest import tiny_store


@pytest.fixture(scope="module")
def store(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    tiny_store(tiny_folder, out, variants=3, shard_size=1)
    return out


def fresh_keys(store, epoch, start=0):
    """The keys of one epoch read by a new dataset in the main process: the reference."""
    ds = open_store(store, shuffle=True, seed=5, shuffle_window=2, batch_size=2, drop_last=True)
    ds.set_epoch(epoch, start)
    return [k for batch in ds for k in batch["__key__"]]


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_persistent_workers_read_each_epochs_variant_and_order(store, context):
    ds = open_store(store, shuffle=True, seed=5, shuffle_window=2, batch_size=2, drop_last=True)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True,
                        multiprocessing_context=context)
    seen = []
    for epoch, start in ((0, 0), (1, 0), (2, 2), (3, 0)):
        ds.set_epoch(epoch, start)
        got = [k for batch in loader for k in batch["__key__"]]
        assert got == fresh_keys(store, epoch, start), f"epoch {epoch} start {start}"
        seen.append({k.rsplit("_v", 1)[1] for k in got})
    assert seen == [{"000"}, {"001"}, {"002"}, {"000"}]
    assert len(fresh_keys(store, 2, 2)) == len(fresh_keys(store, 2)) - 2


@pytest.mark.parametrize("workers", [0, 1, 2, 3])
def test_one_pass_through_several_epochs_reads_each_as_its_own_pass(store, workers):
    """set_epoch(e, start, until): the trainer's one loader pass, whose workers read on into the next
    epoch; the batches are those of separate epochs (the first from `start`), for any worker count."""
    ds = open_store(store, shuffle=True, seed=5, shuffle_window=2, batch_size=2, drop_last=True)
    ds.set_epoch(1, 2, until=4)
    expected = [fresh_keys(store, 1, 2), fresh_keys(store, 2), fresh_keys(store, 3)]
    assert len(ds) == sum(len(keys) // 2 for keys in expected) == ds.items(1, 2) + ds.items(2) + ds.items(3)
    got = [k for batch in DataLoader(ds, batch_size=None, num_workers=workers) for k in batch["__key__"]]
    assert got == [k for keys in expected for k in keys]
    ds.set_epoch(5)                         # a later set_epoch without until reads one epoch again
    assert [k for batch in ds for k in batch["__key__"]] == fresh_keys(store, 5)


def test_one_pass_through_several_epochs_needs_strict_reads(store):
    ds = open_store(store, batch_size=2, max_skips=1)
    with pytest.raises(ConfigError, match="strict reads"):
        ds.set_epoch(0, until=2)
    with pytest.raises(ConfigError, match="must be after epoch"):
        open_store(store).set_epoch(3, until=3)
