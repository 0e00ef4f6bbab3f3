"""Reading a store back through open_store, in DataLoader workers and across ranks."""
import pytest
import torch
from torch.utils.data import DataLoader

from latentstore import open_store
from latentstore.build import BuildConfig, build
from latentstore.errors import ConfigError, StoreError


@pytest.fixture(scope="module")
def store(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    build(BuildConfig(coder="bmshj2018-hyperprior", quality=1, weights="untrained", dataset="imagefolder",
                      root=str(tiny_folder), split="train", out=str(out), variants=3, crop=64,
                      shard_size=2), progress=False)
    return out


def keys(ds, **loader):
    return [k for batch in DataLoader(ds, batch_size=2, **loader) for k in batch["__key__"]]


def test_yields_tensors_with_the_manifest_shape(store):
    ds = open_store(store, fields=("y_hat", "symbols", "label"))
    sample = next(iter(ds))
    assert sample["y_hat"].dtype == torch.float32 and list(sample["y_hat"].shape) == ds.info["latent_shape"]
    assert sample["symbols"].dtype == torch.int32 and sample["label"].dtype == torch.int64
    assert len(ds) == 6


def test_epoch_reads_variant_e_mod_k(store):
    ds = open_store(store)
    seen = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        seen.append({k.rsplit("_v", 1)[1] for k in keys(ds)})
    assert seen == [{"000"}, {"001"}, {"002"}, {"000"}]


def test_workers_and_ranks_split_the_shards_without_overlap(store, monkeypatch):
    ds = open_store(store)
    everything = sorted(keys(ds))
    assert len(everything) == 6
    assert sorted(keys(ds, num_workers=2)) == everything
    per_rank = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        per_rank.append(keys(ds))
    assert sorted(per_rank[0] + per_rank[1]) == everything and not set(per_rank[0]) & set(per_rank[1])


def test_bad_arguments_and_damage_are_named(store, tmp_path):
    with pytest.raises(ConfigError, match="no split 'val'"):
        open_store(store, split="val")
    with pytest.raises(ConfigError, match="variant 5 out of range"):
        open_store(store, variant=5)
    with pytest.raises(StoreError, match="has no manifest.json"):
        open_store(tmp_path)
    shard = store / open_store(store).shards()[0]["path"]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 3])
    try:
        with pytest.raises(StoreError, match=shard.name):
            keys(open_store(store))
    finally:
        shard.write_bytes(data)
