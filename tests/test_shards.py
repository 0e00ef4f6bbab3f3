"""Writer and strict reader of tar shards, without the codec: synthetic samples."""
import json
import os

import google_crc32c
import numpy as np
import pytest

from latentstore.errors import StoreError
from latentstore.format import FIELDS, encode_field
from latentstore.readers import iter_shard
from latentstore.writers import ShardGroupWriter


def make_sample(i: int) -> dict:
    rng = np.random.default_rng(i)
    fields = {"y_hat": rng.normal(size=(4, 2, 2)).astype(np.float16),
              "symbols": rng.integers(-5, 5, (4, 2, 2)).astype(np.int8),
              "y_string": rng.bytes(10 + i), "label": i % 3, "meta": {"key": f"k{i}"}}
    files = {FIELDS[n].ext: encode_field(n, v) for n, v in fields.items()}
    files["__key__"] = f"img{i:03d}_v000"
    return files


def write_group(store, n=5, variants=1):
    with ShardGroupWriter(store, "train", 0, variants) as w:
        for i in range(n):
            for v in range(variants):
                w.write(v, make_sample(i))
        w.extra = {"rejects": []}
    return json.loads((store / "train" / "group-000000.json").read_text())


def test_commit_writes_shards_and_record_with_digests(tmp_path):
    import hashlib
    record = write_group(tmp_path, n=5, variants=2)
    assert [s["samples"] for s in record["shards"]] == [5, 5]
    for s in record["shards"]:
        data = (tmp_path / s["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == s["bytes"]
        assert google_crc32c.value(data) == int(s["crc32c"], 16) and len(s["crc32c"]) == 8
    assert not [p for p in os.listdir(tmp_path / "train") if ".tmp" in p]


def test_same_samples_give_identical_bytes(tmp_path):
    a, b = write_group(tmp_path / "a"), write_group(tmp_path / "b")
    assert a["shards"][0]["sha256"] == b["shards"][0]["sha256"]


def test_exception_inside_writer_commits_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardGroupWriter(tmp_path, "train", 0, 2) as w:
            w.write(0, make_sample(0))
            raise RuntimeError("encoder crashed")
    assert os.listdir(tmp_path / "train") == []


def test_reader_round_trip(tmp_path):
    record = write_group(tmp_path)
    shard = record["shards"][0]
    samples = list(iter_shard(tmp_path / shard["path"], shard["path"], shard["samples"]))
    assert [s["__key__"] for s in samples] == [f"img{i:03d}_v000" for i in range(5)]
    ref = make_sample(2)
    assert samples[2]["y_string"] == ref["y_string.bin"]
    assert samples[2]["label"] == 2 and samples[2]["meta"] == {"key": "k2"}
    assert samples[2]["symbols"].dtype == np.int8


def _member_boundaries(path):
    import tarfile
    with tarfile.open(path) as tar:
        return [m.offset for m in tar.getmembers()]


def test_cut_at_member_boundary_is_caught_and_names_the_shard(tmp_path):
    record = write_group(tmp_path)
    shard = record["shards"][0]
    path = tmp_path / shard["path"]
    cut = _member_boundaries(path)[-5]  # drops the last sample's members: a valid-looking tar
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(StoreError, match="v000-000000.tar.*(holds 4 samples|missing field)"):
        list(iter_shard(path, shard["path"], shard["samples"]))


def test_cut_mid_member_is_caught(tmp_path):
    record = write_group(tmp_path)
    shard = record["shards"][0]
    path = tmp_path / shard["path"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 7])
    with pytest.raises(StoreError, match="v000-000000.tar"):
        list(iter_shard(path, shard["path"], shard["samples"]))


def shard_with_broken_sample_3(tmp_path):
    """(path, shard record) of a 5-sample shard whose sample 3 has a broken .npy magic."""
    shard = write_group(tmp_path)["shards"][0]
    path = tmp_path / shard["path"]
    data = bytearray(path.read_bytes())
    i = data.find(b"\x93NUMPY", data.find(b"img003_v000.symbols.npy"))
    data[i + 1] = ord("X")
    path.write_bytes(bytes(data))
    return path, shard


def test_corrupt_field_names_shard_and_key(tmp_path):
    path, shard = shard_with_broken_sample_3(tmp_path)
    with pytest.raises(StoreError, match=r"v000-000000.tar, key img003_v000: field symbols"):
        list(iter_shard(path, shard["path"], shard["samples"]))


def test_unwanted_samples_are_not_decoded(tmp_path):
    """A DataLoader worker decodes only its own samples (wanted); positions still count,
    and only a reader that wants the broken sample 3 fails on it."""
    path, shard = shard_with_broken_sample_3(tmp_path)
    got = list(iter_shard(path, shard["path"], shard["samples"], wanted={1, 4}))
    assert [s if s is None else s["__key__"] for s in got] == [None, "img001_v000", None, None, "img004_v000"]
    with pytest.raises(StoreError, match="key img003_v000"):
        list(iter_shard(path, shard["path"], shard["samples"], wanted={3}))


def test_damaged_header_is_caught_by_its_checksum(tmp_path):
    record = write_group(tmp_path)
    shard = record["shards"][0]
    path = tmp_path / shard["path"]
    data = bytearray(path.read_bytes())
    second = _member_boundaries(path)[1]
    data[second + 3] ^= 0x20  # one letter of the second member's name
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"v000-000000.tar: damaged tar header at byte \d+ \(checksum\)"):
        list(iter_shard(path, shard["path"], shard["samples"]))


def test_long_keys_round_trip_through_pax_headers(tmp_path):
    """Keys from deep dataset paths can pass tar's 100-byte name field (PAX headers)."""
    key = "train_" + "deep_folder_" * 12 + "img_v000"
    sample = make_sample(0)
    sample["__key__"] = key
    with ShardGroupWriter(tmp_path, "train", 0, 1) as w:
        w.write(0, sample)
        w.extra = {"rejects": []}
    shard = json.loads((tmp_path / "train" / "group-000000.json").read_text())["shards"][0]
    (got,) = iter_shard(tmp_path / shard["path"], shard["path"], 1)
    assert got["__key__"] == key and got["y_string"] == sample["y_string.bin"]


def test_a_failed_commit_leaves_no_temporary_or_orphan_file(tmp_path):
    """The record cannot be written (here: a value JSON cannot hold, as a full disk would fail it)."""
    from latentstore.writers.webdataset import ShardGroupWriter

    with pytest.raises(TypeError):
        with ShardGroupWriter(tmp_path, "train", 0, 2) as writer:
            for v in range(2):
                writer.write(v, {"__key__": f"k_v{v:03d}", "cls": b"0"})
            writer.extra = {"unwritable": {1, 2}}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == []


def test_write_json_atomic_leaves_no_temporary_file_on_failure(tmp_path):
    from latentstore.format import write_json_atomic

    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "x.json", {"bad": object()})
    assert list(tmp_path.iterdir()) == []
