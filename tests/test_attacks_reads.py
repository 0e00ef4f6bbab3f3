"""Attacks on what the reader trusts (issue 24, read side): each edit of a store's files is refused
by the reader in one line naming the store and what was edited, and reported by verify."""
import json
import shutil
from pathlib import Path

import pytest
import zarr

from latentstore import open_store
from latentstore.commands.convert import convert
from latentstore.errors import StoreError
from latentstore.commands.verify import verify

from conftest import tiny_store


@pytest.fixture(scope="module")
def zarr_store(tiny_folder, tmp_path_factory):
    return tiny_store(tiny_folder, tmp_path_factory.mktemp("zarr") / "s", format="zarr", fields=["scales"])


def copy(store, tmp_path):
    return shutil.copytree(store, tmp_path / "s")


def edit_array(store, array, edit):
    path = store / "train" / array / "zarr.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def big_endian(meta):
    meta["codecs"][0]["configuration"]["codecs"][0]["configuration"]["endian"] = "big"


def int32(meta):
    meta["data_type"] = "int32"


def refused(store, array):
    """The reader and verify both refuse `store`, naming the edited array."""
    with pytest.raises(StoreError, match=rf"{store}: array train/{array} has .*edited"):
        list(open_store(store, fields=("y_hat", "scales")))
    problems = verify(store, sources=False).problems
    assert any(f"train/{array}/zarr.json" in p for p in problems), problems


@pytest.mark.parametrize("array, edit", [("y_hat", big_endian), ("scales", int32)])
def test_attack_zarr_array_metadata_edit_refused(zarr_store, tmp_path, array, edit):
    store = copy(zarr_store, tmp_path)
    edit_array(store, array, edit)
    refused(store, array)


def test_attack_zarr_consolidated_metadata_edit_refused(zarr_store, tmp_path):
    """The same edit placed only in the split's consolidated metadata, which Zarr reads instead."""
    store = copy(zarr_store, tmp_path)
    original = (store / "train" / "y_hat" / "zarr.json").read_bytes()
    edit_array(store, "y_hat", big_endian)
    zarr.consolidate_metadata(str(store), path="train", zarr_format=3)
    (store / "train" / "y_hat" / "zarr.json").write_bytes(original)
    assert "consolidated_metadata" in json.loads((store / "train" / "zarr.json").read_text())
    refused(store, "y_hat")


def test_attack_zarr_shape_bomb_refused_before_allocating(zarr_store, tmp_path):
    store = copy(zarr_store, tmp_path)

    def bomb(meta):
        meta["shape"][-1] = 128000
        meta["chunk_grid"]["configuration"]["chunk_shape"][-1] = 128000
        meta["codecs"][0]["configuration"]["chunk_shape"][-1] = 128000
    edit_array(store, "y_hat", bomb)
    refused(store, "y_hat")


def test_attack_convert_of_an_edited_zarr_store_refused(zarr_store, tmp_path):
    store = copy(zarr_store, tmp_path)
    edit_array(store, "y_hat", big_endian)
    with pytest.raises(StoreError, match=r"array train/y_hat has .*edited"):
        convert(store, tmp_path / "out", "webdataset", progress=False)


def rerecord(store):
    """Record the current digests of every chunk file, as an attacker who can edit records would."""
    from latentstore.store.checksum import file_record
    from latentstore.store.format import MANIFEST

    manifest = json.loads((store / MANIFEST).read_text())
    for unit in manifest["splits"]["train"]["shards"]:
        for f in unit["files"]:
            f.update(file_record(store / f["path"]))
        unit["bytes"] = sum(f["bytes"] for f in unit["files"])
    (store / MANIFEST).write_text(json.dumps(manifest))
    for record in (store / "train").glob("group-*.json"):
        data = json.loads(record.read_text())
        data["shards"] = [u for u in manifest["splits"]["train"]["shards"] if u["group"] == data["group"]]
        record.write_text(json.dumps(data))


def test_attack_nan_y_hat_with_fresh_digests_reported_by_verify(zarr_store, tmp_path):
    store = copy(zarr_store, tmp_path)
    y_hat = zarr.open_array(str(store / "train" / "y_hat"), mode="r+")
    y_hat[0, 1, 0, 0, 0] = float("nan")
    rerecord(store)
    problems = verify(store, sources=False).problems
    assert any("key train_class0_img1_v000: y_hat holds 1 non-finite values" in p for p in problems), problems


@pytest.fixture(scope="module")
def tar_store(tiny_folder, tmp_path_factory, tiny_store_copy):
    return tiny_store_copy(tiny_folder, tmp_path_factory.mktemp("tar") / "s", format="webdataset")


@pytest.mark.parametrize("where", ["../outside/v000-000000.tar", "/etc/hostname"])
def test_attack_shard_path_out_of_the_store_refused(tar_store, tmp_path, where):
    """The manifest and the group record both name a shard outside the store: refused before it is opened."""
    from latentstore.store.format import MANIFEST

    store = copy(tar_store, tmp_path)
    shard = store / "train" / "v000-000000.tar"
    (tmp_path / "outside").mkdir()
    shutil.copy(shard, tmp_path / "outside" / shard.name)
    for path in (store / MANIFEST, store / "train" / "group-000000.json"):
        path.write_text(path.read_text().replace('"train/v000-000000.tar"', json.dumps(where)))
    with pytest.raises(StoreError, match=rf"path '{where}' leads outside the store"):
        list(open_store(store))
    problems = verify(store, sources=False).problems
    assert problems and all("has 3 bytes" not in p for p in problems), problems
    assert any("leads outside the store" in p for p in problems), problems


def test_attack_shard_symlink_out_of_the_store_refused(tar_store, tmp_path):
    store = copy(tar_store, tmp_path)
    shard = store / "train" / "v000-000000.tar"
    outside = tmp_path / "outside.tar"
    shard.rename(outside)
    shard.symlink_to(outside)
    with pytest.raises(StoreError, match=r"is a link to .*outside the store"):
        list(open_store(store))


def edit_index(store, edit):
    """Edit the first shard's sample index and record its new digests, as an editor of the store could."""
    from latentstore.store.checksum import file_record
    from latentstore.store.format import MANIFEST

    manifest = json.loads((store / MANIFEST).read_text())
    entry = manifest["splits"]["train"]["shards"][0]["index"]
    index = json.loads((store / entry["path"]).read_text())
    edit(index)
    (store / entry["path"]).write_text(json.dumps(index))
    new = file_record(store / entry["path"])
    for path in (store / MANIFEST, store / "train" / "group-000000.json"):
        record = json.loads(path.read_text())
        shards = record["splits"]["train"]["shards"] if "splits" in record else record["shards"]
        for shard in shards:
            if shard["index"]["path"] == entry["path"]:
                shard["index"].update(new)
        path.write_text(json.dumps(record))


def as_strings(index):
    index["offsets"] = [str(o) for o in index["offsets"]]


def twice_the_first(index):
    for column in ("keys", "offsets", "bytes", "crc32c"):
        index[column][1] = index[column][0]


@pytest.mark.parametrize("edit, problem", [(as_strings, "not integers"), (twice_the_first, "lists a key twice")])
def test_attack_malformed_sample_index_refused_naming_the_shard(tar_store, tmp_path, edit, problem):
    store = copy(tar_store, tmp_path)
    edit_index(store, edit)
    with pytest.raises(StoreError, match=rf"shard train/v000-000000.tar: its index .*{problem}"):
        list(open_store(store))
    # under max_skips a typed error too: the shard's samples are skipped, not a TypeError traceback
    assert list(open_store(store, max_skips=100)) == []


def test_attack_swapped_index_entries_reported_by_verify(tar_store, tmp_path):
    def swap(index):
        for column in ("keys", "offsets", "bytes", "crc32c"):
            index[column][0], index[column][1] = index[column][1], index[column][0]
    store = copy(tar_store, tmp_path)
    edit_index(store, swap)
    problems = verify(store, sources=False).problems
    assert any("its index train/" in p and "does not match the tar's members" in p for p in problems), problems


def _hub_cache(tmp_path, monkeypatch, linked: bool) -> Path:
    """An offline Hugging Face cache holding random resnet18 weights as timm/resnet18.a1_in1k's release:
    the snapshot file a link into blobs/ (as the hub writes it) or a regular file (as `cp -rL` leaves it)."""
    import hashlib

    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("resnet18")
    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    weights = tmp_path / "random.safetensors"
    tmp_path.mkdir(parents=True)
    save_file(model.state_dict(), str(weights))
    blob = repo / "blobs" / hashlib.sha256(weights.read_bytes()).hexdigest()
    snapshot = repo / "snapshots" / ("0" * 40) / "model.safetensors"
    blob.parent.mkdir(parents=True)
    snapshot.parent.mkdir(parents=True)
    shutil.copy(weights, blob)
    if linked:
        snapshot.symlink_to(Path("../../blobs") / blob.name)
    else:
        shutil.copy(weights, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return snapshot


def test_hub_snapshot_copied_as_a_regular_file_is_never_recorded_as_trained(tmp_path, monkeypatch):
    from latentstore.errors import WeightsError
    from latentstore.teacher.load import load_teacher

    _hub_cache(tmp_path / "linked", monkeypatch, linked=True)
    assert load_teacher("resnet18", "pretrained", strides="8,32").weights["hf_hub_id"] == "timm/resnet18.a1_in1k"
    snapshot = _hub_cache(tmp_path / "copied", monkeypatch, linked=False)
    with pytest.raises(WeightsError, match="not a link into the cache's blobs/") as err:
        load_teacher("resnet18", "pretrained", strides="8,32")
    assert str(snapshot) in str(err.value) and "\n" not in str(err.value)
