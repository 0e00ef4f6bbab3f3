"""convert: tar -> zarr -> tar gives the original bytes; tar -> zarr equals a direct zarr build."""
import json

import numpy as np
import pytest

from latentstore import open_store
from latentstore.build.run import BuildConfig, build
from latentstore.commands.convert import convert
from latentstore.errors import ConfigError
from latentstore.store.format import MANIFEST
from latentstore.commands.verify import verify

ARGS = dict(coder="mbt2018-mean", quality=1, weights="untrained", dataset="imagefolder",
            split="train", variants=2, crop=64, shard_size=4, fields=("means", "scales"))


def manifest_without_storage(store):
    """The manifest minus what legitimately differs between backends."""
    m = json.loads((store / MANIFEST).read_text())
    m.pop("backend")
    for split in m["splits"].values():
        split.pop("shards")
        split["config"].pop("format")
        split.pop("bytes_per_sample")
    return m


def samples(store):
    ds = open_store(store, fields=("y_hat", "symbols", "y_string", "z_string", "means", "label", "meta"),
                    shuffle=False)
    out = {}
    for epoch in range(ds.info["variants"]):
        ds.set_epoch(epoch)
        out.update({s["__key__"]: s for s in ds})
    return out


@pytest.fixture(scope="module")
def tar_store(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("tar")
    build(BuildConfig(root=str(tiny_folder), out=str(out), **ARGS), progress=False)
    return out


def test_round_trip_gives_the_original_bytes(tar_store, tmp_path):
    convert(tar_store, tmp_path / "zarr", "zarr", progress=False)
    report = verify(tmp_path / "zarr", decode=3)  # CompressAI decodes Zarr-stored strings too
    assert report.ok and report.decoded == 3 and report.samples == 12
    convert(tmp_path / "zarr", tmp_path / "back", "webdataset", progress=False)
    for shard in sorted(tar_store.glob("train/*.tar")):
        assert (tmp_path / "back" / "train" / shard.name).read_bytes() == shard.read_bytes(), shard.name
    assert (tmp_path / "back" / MANIFEST).read_bytes() == (tar_store / MANIFEST).read_bytes()


def test_converted_store_reads_like_a_direct_zarr_build(tar_store, tiny_folder, tmp_path):
    convert(tar_store, tmp_path / "converted", "zarr", progress=False)
    build(BuildConfig(root=str(tiny_folder), out=str(tmp_path / "direct"), format="zarr", **ARGS), progress=False)
    assert manifest_without_storage(tmp_path / "converted") == manifest_without_storage(tmp_path / "direct")
    a, b = samples(tmp_path / "converted"), samples(tmp_path / "direct")
    assert a.keys() == b.keys() and len(a) == 12
    for key in a:
        for name, value in a[key].items():
            if hasattr(value, "numpy"):
                np.testing.assert_array_equal(value.numpy(), b[key][name].numpy(), err_msg=f"{key} {name}")
            elif not name.startswith("__"):
                assert value == b[key][name], (key, name)


def test_convert_refuses_same_backend(tar_store, tmp_path):
    with pytest.raises(ConfigError, match="already a webdataset store"):
        convert(tar_store, tmp_path / "x", "webdataset", progress=False)


def flip_member_byte(shard, suffix):
    """Flip one payload byte of the first member ending in `suffix` (its header stays valid)."""
    import tarfile

    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(suffix))
    data = bytearray(shard.read_bytes())
    data[member.offset_data + member.size - 1] ^= 0x01
    shard.write_bytes(bytes(data))


def test_convert_refuses_a_damaged_source_instead_of_laundering_it(tar_store, tmp_path):
    import shutil

    from latentstore.errors import StoreError

    src = shutil.copytree(tar_store, tmp_path / "src")
    flip_member_byte(src / "train" / "v001-000000.tar", ".y_hat.npy")
    assert not verify(src).ok
    with pytest.raises(StoreError, match=r"shard train/v001-000000.tar: .* differs from its record .* convert stops"):
        convert(src, tmp_path / "zarr", "zarr", progress=False)
    assert not (tmp_path / "zarr" / MANIFEST).exists()


def test_convert_refuses_a_damaged_zarr_source(tar_store, tmp_path):
    from latentstore.errors import StoreError

    convert(tar_store, tmp_path / "zarr", "zarr", progress=False)
    chunk = sorted((tmp_path / "zarr" / "train" / "y_hat" / "c").rglob("*"))[-1]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="differs from its record .* convert stops"):
        convert(tmp_path / "zarr", tmp_path / "back", "webdataset", progress=False)
    assert not (tmp_path / "back" / MANIFEST).exists()
