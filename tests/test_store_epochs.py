"""set_epoch reaches DataLoader workers that persist across epochs."""
import pytest
from torch.utils.data import DataLoader

from latentstore import open_store

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
