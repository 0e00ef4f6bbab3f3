"""Writer and strict reader of tar shards, without the codec: synthetic samples."""
import json
import os

import google_crc32c
import numpy as np
import pytest

from latentstore.errors import StoreError
from latentstore.store.commit import GroupCommit, GroupLayout
from latentstore.store.readers import iter_shard
from latentstore.store.sample import Sample, SampleMeta


def make_sample(i: int, variant: int = 0, key: str | None = None) -> Sample:
    rng = np.random.default_rng(i)
    key = key or f"img{i:03d}_v{variant:03d}"
    meta = SampleMeta(key=key, item=f"img{i:03d}", label=i % 3, variant=variant, source=f"img{i}.png",
                      augment={}, image_size=[32, 32], padding={}, valid_region=[], y_shape=[4, 2, 2],
                      z_shape=None, bits=80 + i, bpp=(80 + i) / 1024)
    return Sample(key, variant, {"y_hat": rng.normal(size=(4, 2, 2)).astype(np.float16),
                                 "symbols": rng.integers(-5, 5, (4, 2, 2)).astype(np.int8),
                                 "y_string": rng.bytes(10 + i), "label": i % 3}, meta)


def layout(n=5, variants=1) -> GroupLayout:
    return GroupLayout("train", 0, variants, tuple(f"img{i:03d}" for i in range(n)), shard_size=n, total_items=n)


def write_group(store, n=5, variants=1):
    with GroupCommit(store, "webdataset", layout(n, variants)) as group:
        for v in range(variants):
            for i in range(n):
                group.write(make_sample(i, v))
        record = group.commit()
    assert record == json.loads((store / "train" / "group-000000.json").read_text())
    return record


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
        with GroupCommit(tmp_path, "webdataset", layout(1, 2)) as group:
            group.write(make_sample(0))
            raise RuntimeError("encoder crashed")
    assert os.listdir(tmp_path / "train") == []


def test_an_interrupt_while_a_group_opens_its_files_leaves_none(tmp_path, monkeypatch):
    """Ctrl-C can land while the writer creates a group's temporary shards (one per variant): the with-block
    never started, so its exit does not clean up; the entry must (a parallel build's Ctrl-C test left 4 of 6)."""
    import latentstore.store.tar.writer as writer
    opened, real = [], writer._HashingFile

    def interrupted_at_the_third(path):
        opened.append(real(path))
        if len(opened) == 3:
            raise KeyboardInterrupt
        return opened[-1]
    monkeypatch.setattr(writer, "_HashingFile", interrupted_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        with GroupCommit(tmp_path, "webdataset", layout(1, 6)):
            pass
    assert len(opened) == 3 and os.listdir(tmp_path / "train") == []


def test_reader_round_trip(tmp_path):
    record = write_group(tmp_path)
    shard = record["shards"][0]
    samples = list(iter_shard(tmp_path / shard["path"], shard["path"], shard["samples"]))
    assert [s.key for s in samples] == [f"img{i:03d}_v000" for i in range(5)]
    ref, got = make_sample(2), samples[2]
    assert got.shard == shard["path"] and got.variant is None  # a tar shard read without its record
    assert got.fields["y_string"] == ref.fields["y_string"]
    assert got.fields["label"] == 2 and got.meta == ref.meta
    assert got.fields["symbols"].dtype == np.int8 and np.array_equal(got.fields["y_hat"], ref.fields["y_hat"])


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
    assert [s if s is None else s.key for s in got] == [None, "img001_v000", None, None, "img004_v000"]
    with pytest.raises(StoreError, match="key img003_v000"):
        list(iter_shard(path, shard["path"], shard["samples"], wanted={3}))


def _bytes_read() -> int:
    return int(next(line for line in open("/proc/self/io") if line.startswith("rchar:")).split()[1])


def big_shard(tmp_path):
    """(samples, shard record) of a committed shard of 5 samples whose y_string is 200 kB each."""
    big = [make_sample(i) for i in range(5)]
    for s in big:
        s.fields["y_string"] = np.random.default_rng(s.meta.label).bytes(200_000)
    with GroupCommit(tmp_path, "webdataset", layout(5)) as group:
        for s in big:
            group.write(s)
        return big, group.commit()["shards"][0]


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="counts bytes read through /proc")
def test_unwanted_samples_are_seeked_over_not_read(tmp_path):
    """k DataLoader workers each want 1/k of a shard: the rest is skipped, not read k times over."""
    big, shard = big_shard(tmp_path)
    path = tmp_path / shard["path"]

    def read(wanted, record=None):
        before = _bytes_read()
        got = list(iter_shard(path, shard["path"], shard["samples"], wanted=wanted, record=record))
        return _bytes_read() - before, got

    everything, _ = read(None)
    one, got = read({2})
    assert everything > 5 * 200_000 and one < 2 * 200_000, (everything, one)
    assert got[2].fields["y_string"] == big[2].fields["y_string"] and got[:2] == [None, None]
    # Checked against the record: through the sample index, only the wanted sample's bytes are read
    # and checked (the whole-file digest would read all five).
    one_checked, got = read({2}, record=shard)
    assert one_checked < 2 * 200_000, one_checked
    assert got[2].fields["y_string"] == big[2].fields["y_string"] and got[:2] == [None, None]


def test_the_sample_index_gives_each_sample_with_its_own_checksum(tmp_path):
    """Reading through the index gives what reading the whole tar gives; each span is one sample."""
    from latentstore.store.tar.reader import build_index

    shard = write_group(tmp_path)["shards"][0]
    path = tmp_path / shard["path"]
    assert shard["index"]["path"] == "train/v000-000000.idx.json"
    index = json.loads((tmp_path / shard["index"]["path"]).read_text())
    assert index == build_index(path, shard["path"]) and index["keys"] == [f"img{i:03d}_v000" for i in range(5)]
    assert index["offsets"][0] == 0 and all(o + n == nxt for o, n, nxt in
                                           zip(index["offsets"], index["bytes"], index["offsets"][1:]))
    data = path.read_bytes()
    for o, n, crc in zip(index["offsets"], index["bytes"], index["crc32c"]):
        assert f"{google_crc32c.value(data[o:o + n]):08x}" == crc
    plain = list(iter_shard(path, shard["path"], 5))
    indexed = list(iter_shard(path, shard["path"], 5, record=shard))
    assert [s.key for s in indexed] == [s.key for s in plain]
    for a, b in zip(plain, indexed):
        assert a.fields.keys() == b.fields.keys() and a.meta == b.meta
        assert a.fields["y_string"] == b.fields["y_string"] and np.array_equal(a.fields["y_hat"], b.fields["y_hat"])


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
    sample = make_sample(0, key=key)
    with GroupCommit(tmp_path, "webdataset", layout(1)) as group:
        group.write(sample)
        shard = group.commit()["shards"][0]
    (got,) = iter_shard(tmp_path / shard["path"], shard["path"], 1)
    assert got.key == key and got.fields["y_string"] == sample.fields["y_string"]
    (indexed,) = iter_shard(tmp_path / shard["path"], shard["path"], 1, record=shard)  # the span holds the PAX header
    assert indexed.key == key and indexed.fields["y_string"] == sample.fields["y_string"]


def test_a_failed_commit_leaves_no_temporary_or_orphan_file(tmp_path):
    """The record cannot be written (here: a value JSON cannot hold, as a full disk would fail it)."""
    with pytest.raises(TypeError):
        with GroupCommit(tmp_path, "webdataset", layout(1, 2)) as group:
            for v in range(2):
                group.write(make_sample(0, v))
            group.commit(rejects=[{"unwritable": {1, 2}}])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == []


def test_write_json_atomic_leaves_no_temporary_file_on_failure(tmp_path):
    from latentstore.store.format import write_json_atomic

    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "x.json", {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_a_sample_checked_once_is_checked_again_when_its_shard_changes(tmp_path):
    """Later epochs skip a sample whose CRC matched (memoized by path, size and mtime), but damage
    written since, which gives the file a new mtime, is caught."""
    shard = write_group(tmp_path)["shards"][0]
    path = tmp_path / shard["path"]
    assert len(list(iter_shard(path, shard["path"], 5, record=shard))) == 5
    data = bytearray(path.read_bytes())
    data[data.find(b"img003_v000.y_string.bin") + 512 + 5] ^= 0x01   # a byte of that member's data
    path.write_bytes(bytes(data))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))  # a coarse clock: still a new mtime
    with pytest.raises(StoreError, match="v000-000000.tar, key img003_v000: bytes differ from the shard index"):
        list(iter_shard(path, shard["path"], 5, record=shard))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="counts bytes read through /proc")
def test_once_checked_a_sample_s_unwanted_members_are_not_read(tmp_path):
    """An epoch after the first (CRC matched in this process) reads only the members it decodes: a
    trainer that wants ŷ and the label does not read the strings or teacher features again."""
    big, shard = big_shard(tmp_path)
    path, fields = tmp_path / shard["path"], ("y_hat", "label", "meta")

    def read():
        before = _bytes_read()
        got = list(iter_shard(path, shard["path"], 5, fields=fields, record=shard))
        return _bytes_read() - before, got

    first, got_first = read()
    again, got_again = read()
    assert first > 5 * 200_000 and again < 200_000, (first, again)
    for s, a, b in zip(big, got_first, got_again):
        assert a.key == b.key == s.key and a.meta == b.meta == s.meta and b.fields.keys() == {"y_hat", "label"}
        np.testing.assert_array_equal(b.fields["y_hat"], s.fields["y_hat"])
        assert b.fields["label"] == s.fields["label"]
