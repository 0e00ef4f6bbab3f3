"""Reading a store back through open_store, in DataLoader workers and across ranks."""
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from latentstore import open_store
from latentstore.errors import ConfigError, StoreError

from conftest import tiny_store


@pytest.fixture(scope="module")
def store(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    tiny_store(tiny_folder, out, variants=3, shard_size=2)
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


def test_a_field_the_store_never_had_is_refused_naming_what_it_holds(store):
    with pytest.raises(ConfigError, match=r"has no field means: it holds .*y_hat.*build with --fields means"):
        open_store(store, fields=("y_hat", "label", "means"))
    with pytest.raises(ConfigError, match=r"has no field label_map: it holds .*symbols.*Cityscapes"):
        open_store(store, fields=("y_hat", "label_map"))
    with pytest.raises(ConfigError, match=r"has no field teacher_s8: it holds y_hat, .*add-teacher"):
        open_store(store, fields=("y_hat", "teacher_s8"))


def test_a_string_of_fields_is_one_field(store):
    sample = next(iter(open_store(store, fields="y_hat")))
    assert sorted(k for k in sample if not k.startswith("__")) == ["y_hat"]


# ---------------------------------------------------------------- epoch order, ranks, workers, resume

PRIME = 7  # samples per variant: divides by neither 2 nor 3


@pytest.fixture(scope="module")
def prime_store(tiny_folder, tmp_path_factory):
    """7 images (2 + 2 + 2 + 1 per shard), 2 variants."""
    import shutil

    root = tmp_path_factory.mktemp("prime")
    for n, src in enumerate(sorted((tiny_folder / "train").glob("*/*.png"))):
        (root / "train" / f"c{n % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / "train" / f"c{n % 2}" / f"i{n}.png")
    shutil.copy(src, root / "train" / "c1" / "extra.png")
    out = tmp_path_factory.mktemp("prime-store")
    tiny_store(root, out, variants=2, shard_size=2)
    return out


def global_keys(store, epoch, **kw):
    """The epoch's global order G as sample keys, read with one rank and no workers."""
    ds = open_store(store, rank=0, world=1, **kw)
    ds.set_epoch(epoch)
    keys = [s["__key__"] for s in ds]
    assert len(keys) == PRIME and len(set(keys)) == PRIME
    return keys


def rank_keys(store, epoch, rank, world, workers, batch_size=None, **kw):
    ds = open_store(store, rank=rank, world=world, batch_size=batch_size, **kw)
    ds.set_epoch(epoch, ds.start)
    out = []
    for item in DataLoader(ds, batch_size=None, num_workers=workers):
        out += item["__key__"] if batch_size else [item["__key__"]]
    return out


@pytest.mark.parametrize("batch_size", [None, 2])
def test_order_is_a_function_of_seed_and_epoch_only(prime_store, batch_size):
    kw = dict(shuffle=True, seed=3, shuffle_window=2)
    g = global_keys(prime_store, 1, **kw)
    assert all(k.endswith("_v001") for k in g)               # epoch 1 reads variant 1
    assert g != global_keys(prime_store, 3, **kw)             # another epoch, another order
    assert g != global_keys(prime_store, 1, **{**kw, "seed": 4})
    for world in (1, 2, 3):
        per_rank = PRIME // world
        for workers in (0, 2):
            got = [rank_keys(prime_store, 1, r, world, workers, batch_size, **kw) for r in range(world)]
            assert [len(k) for k in got] == [per_rank] * world
            # Ranks in rank order give G (minus the last N mod W samples), whatever the worker count.
            assert sum(got, []) == g[:world * per_rank], (world, workers)


def test_prime_store_gives_every_rank_the_same_count(prime_store):
    for world in (1, 2, 3):
        for remainder, per_rank in (("drop", PRIME // world), ("pad", -(-PRIME // world))):
            counts, batches, seen = [], [], []
            for rank in range(world):
                ds = open_store(prime_store, rank=rank, world=world, remainder=remainder, shuffle=True)
                keys = [s["__key__"] for s in ds]
                counts.append(len(keys))
                seen += keys
                bds = open_store(prime_store, rank=rank, world=world, remainder=remainder, shuffle=True,
                                 batch_size=2)
                batches.append(sum(1 for _ in bds))
                assert len(ds) == len(keys) and len(bds) == batches[-1]
            assert counts == [per_rank] * world and len(set(batches)) == 1
            if remainder == "pad":
                assert set(seen) == set(global_keys(prime_store, 0, shuffle=True))  # pad: nothing left out


def test_resume_from_an_offset_yields_exactly_the_unseen_samples(prime_store):
    kw = dict(shuffle=True, seed=1, shuffle_window=3)
    for world in (1, 2):
        for rank in range(world):
            full = rank_keys(prime_store, 2, rank, world, 0, 2, **kw)
            for start in (0, 2):
                resumed = rank_keys(prime_store, 2, rank, world, 2, 2, start=start, **kw)
                assert resumed == full[start:]


def test_shuffle_window_one_keeps_shards_whole(prime_store):
    ds = open_store(prime_store, shuffle=True, shuffle_window=1, seed=5)
    order = ds.order()
    runs = [path for i, (path, _) in enumerate(order) if i == 0 or order[i - 1][0] != path]
    assert len(runs) == len(ds.shards())                       # each shard read in one run


def test_bad_reader_arguments_are_named(prime_store):
    with pytest.raises(ConfigError, match="remainder"):
        open_store(prime_store, remainder="wrap")
    with pytest.raises(ConfigError, match="cannot be split over 8 ranks"):
        list(open_store(prime_store, rank=0, world=8))
    with pytest.raises(ConfigError, match="batch_size must be at least 1"):
        open_store(prime_store, batch_size=0)


# ---------------------------------------------------------------- strict by default, lenient with a budget

def corrupt(store, tmp_path, keys_to_break=1, truncate=False):
    """A copy of `store` with the y_hat member of the first `keys_to_break` samples of shard 0 garbled."""
    import shutil
    import tarfile
    import io

    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    ds = open_store(copy)
    shard = copy / ds.shards()[0]["path"]
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    keys = sorted({m.name.split(".")[0] for m, _ in members})
    broken = keys[:keys_to_break]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            key = m.name.split(".")[0]
            if truncate and key == keys[-1]:
                continue                                      # cut at a member boundary: no tar error
            if key in broken and m.name.endswith("y_hat.npy"):
                data = b"not an npy file"
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    return copy, broken, ds.shards()[0]["path"]


def test_lenient_reads_skip_damaged_samples_and_name_them(prime_store, tmp_path):
    copy, broken, shard = corrupt(prime_store, tmp_path)
    with pytest.raises(StoreError, match=f"shard {shard}, key {broken[0]}: bytes differ from the shard index's checksum"):
        list(open_store(copy))                                # strict is the default
    # The rewrite moved the bytes of the sample after the broken one too: neither matches its index CRC.
    ds = open_store(copy, max_skips=2)
    got = list(ds)
    assert len(got) == PRIME - 2 and broken[0] not in {s["__key__"] for s in got}
    assert len(ds.skipped) == 2 and all(shard in s for s in ds.skipped)
    assert f"key {broken[0]}: bytes differ" in ds.skipped[0]
    assert all("bytes differ from the shard index's checksum" in s for s in ds.skipped)
    assert sum(bool(s["__skipped__"]) for s in got) == 1     # reported with the next sample, too
    batches = list(DataLoader(open_store(copy, max_skips=2, batch_size=3), batch_size=None, num_workers=2))
    assert sum(len(b["__key__"]) for b in batches) == PRIME - 2
    assert [s for b in batches for s in b["__skipped__"]] == ds.skipped


def test_lenient_budget_and_lost_tail_are_errors_or_named(prime_store, tmp_path):
    copy, broken, shard = corrupt(prime_store, tmp_path, keys_to_break=1, truncate=True)
    with pytest.raises(StoreError, match=f"shard {shard}: .* bytes, the manifest records"):  # size first
        list(open_store(copy))
    with pytest.raises(StoreError, match="2 damaged samples, more than max_skips=1"):
        list(open_store(copy, max_skips=1))
    ds = open_store(copy, max_skips=2)
    assert len(list(ds)) == PRIME - 2
    assert [s.split(": lost")[0] for s in ds.skipped] == [f"shard {shard}, sample #{i} (key unknown)" for i in (0, 1)]


# ---------------------------------------------------------------- random access and keys

@pytest.fixture(scope="module")
def both_backends(tiny_folder, tmp_path_factory):
    """The same build (2 variants, one unreadable image) as tar shards and as Zarr: {format: store}."""
    import shutil

    tmp = tmp_path_factory.mktemp("access")
    root = Path(shutil.copytree(tiny_folder, tmp / "images"))
    (root / "train" / "class0" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    stores = {}
    for fmt in ("webdataset", "zarr"):
        stores[fmt] = tmp / fmt
        tiny_store(root, stores[fmt], variants=2, shard_size=2, format=fmt)
    return stores


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


@pytest.mark.parametrize("fmt", ["webdataset", "zarr"])
def test_random_access_by_key_and_index_gives_the_iterated_samples(both_backends, fmt):
    ds = open_store(both_backends[fmt], fields=("y_hat", "symbols", "label", "meta"))
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        samples = list(ds)                                    # unshuffled: stored order
        assert ds.keys() == [s["__key__"] for s in samples] and len(samples) == 5
        for i, s in enumerate(samples):
            assert same(ds[i], s) and same(ds[s["__key__"]], s)
        assert same(ds[-1], samples[-1])
    assert ds.keys(variant=0) == [k.replace("_v001", "_v000") for k in ds.keys(variant=1)]
    assert "train_class0_img1_v000" not in ds.keys(0)       # rejected at build time
    with pytest.raises(ConfigError, match="No sample 'train_class0_img1_v000'.*ds.keys()"):
        ds["train_class0_img1_v000"]
    with pytest.raises(ConfigError, match="Sample index 5 out of range: variant 1 .* holds 5 samples"):
        ds[5]


def test_both_backends_list_the_same_keys(both_backends):
    tar, zarr = (open_store(both_backends[f]) for f in ("webdataset", "zarr"))
    assert tar.keys(0) == zarr.keys(0) and tar.keys(1) == zarr.keys(1)


def test_open_store_shows_its_options():
    import inspect

    import latentstore

    params = inspect.signature(latentstore.open_store).parameters
    assert {"fields", "variant", "shuffle", "batch_size", "max_skips", "teacher_dtype"} <= set(params)
    assert "kwargs" not in params and "valid_region" in latentstore.open_store.__doc__


def test_a_pass_reads_each_sample_when_its_item_is_due_not_its_window_first(tiny_folder, tiny_store_copy, tmp_path):
    """The first item of a shuffled pass comes before the rest of its shuffle window is read: a damaged
    sample later in the window fails the item that needs it, not the first one (strict reading)."""
    import json

    store = tiny_store_copy(tiny_folder, tmp_path / "s", shard_size=2)
    ds = open_store(store, shuffle=True, shuffle_window=3, seed=1)
    order = ds.order()
    victim_path, victim = order[1]
    shard = store / victim_path
    index = json.loads(shard.with_name(shard.name.replace(".tar", ".idx.json")).read_text())
    data = bytearray(shard.read_bytes())
    data[index["offsets"][victim] + index["bytes"][victim] - 600] ^= 0x01  # inside the sample's last member
    shard.write_bytes(bytes(data))
    items = iter(ds)
    first = next(items)
    assert first["__shard__"] == order[0][0]
    with pytest.raises(StoreError, match=f"key {index['keys'][victim]}: bytes differ"):
        next(items)
