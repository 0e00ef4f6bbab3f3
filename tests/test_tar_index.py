"""The sample index the tar writer builds as it streams: it equals the spans stdlib tarfile finds in the
shard, and a store whose index is gone or unlisted is refused, naming the shard."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import google_crc32c
import numpy as np
import pytest

from latentstore import open_store
from latentstore.errors import StoreError
from latentstore.store.commit import GroupCommit, GroupLayout
from latentstore.store.readers import iter_shard
from latentstore.store.sample import Sample, SampleMeta

from conftest import tiny_store

#: Keys that take each path through a tar header: short, exactly at and past ustar's 100-byte name
#: field (a PAX header before the member), and not ASCII (a PAX header too).
ITEMS = ("img000", "a" * 88, "b" * 120, "ünïcødé_名前")
#: Member payload sizes around the 512-byte block: empty, one byte short, exact, one past, large.
SIZES = (0, 511, 512, 513, 70_000)


def make_sample(i: int, item: str, variant: int) -> Sample:
    rng = np.random.default_rng(i)
    key = f"{item}_v{variant:03d}"
    meta = SampleMeta(key=key, item=item, label=i, variant=variant, source=f"{item}.png", augment={},
                      image_size=[32, 32], padding={}, valid_region=[], y_shape=[4, 2, 2 + i], z_shape=None,
                      bits=8, bpp=0.01)
    return Sample(key, variant, {"y_hat": rng.normal(size=(4, 2, 2 + i)).astype(np.float16),
                                 "y_string": rng.bytes(SIZES[i % len(SIZES)]), "label": i}, meta)


def write_group(store, variants=2) -> dict:
    layout = GroupLayout("train", 0, variants, ITEMS, shard_size=len(ITEMS), total_items=len(ITEMS))
    with GroupCommit(store, "webdataset", layout) as group:
        for v in range(variants):
            for i, item in enumerate(ITEMS):
                group.write(make_sample(i, item, v))
        return group.commit()


def index_by_tarfile(path) -> dict:
    """The sample index as stdlib tarfile sees the shard: each sample from its first member's header
    (TarInfo.offset, which starts at a PAX header where there is one) to its last member's padded end."""
    spans = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key = member.name.split(".", 1)[0]
            end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            start = spans[key][0] if key in spans else member.offset
            spans[key] = (start, end)
    data = path.read_bytes()
    return {"keys": list(spans), "offsets": [s for s, _ in spans.values()],
            "bytes": [e - s for s, e in spans.values()],
            "crc32c": [f"{google_crc32c.value(data[s:e]):08x}" for s, e in spans.values()]}


def test_the_writers_index_is_the_one_tarfile_finds(tmp_path):
    record = write_group(tmp_path)
    for v, shard in enumerate(record["shards"]):
        index = json.loads((tmp_path / shard["index"]["path"]).read_text())
        expected = index_by_tarfile(tmp_path / shard["path"])
        assert expected["keys"] == [f"{item}_v{v:03d}" for item in ITEMS]
        assert index == expected
        assert expected["offsets"][2] > 0 and len(expected["crc32c"]) == len(ITEMS)


def test_the_writer_never_reads_a_shard_back(tmp_path, monkeypatch):
    """The index comes from the bytes streamed: no shard file is opened for reading during a commit."""
    import builtins
    opened = []
    real_open = builtins.open

    def recording_open(file, mode="r", *args, **kwargs):
        opened.append((str(file), mode))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    record = write_group(tmp_path)
    monkeypatch.undo()
    reads = [(f, m) for f, m in opened if ".tar" in f and "r" in m]
    assert reads == [] and [s["samples"] for s in record["shards"]] == [len(ITEMS)] * 2


def test_a_shard_whose_index_file_is_deleted_is_refused_naming_it(tmp_path):
    shard = write_group(tmp_path)["shards"][1]
    (tmp_path / shard["index"]["path"]).unlink()
    with pytest.raises(StoreError, match=r"^shard train/v001-000000.tar: its index train/v001-000000.idx.json "
                                         r"is missing; run `latentstore verify`"):
        list(iter_shard(tmp_path / shard["path"], shard["path"], shard["samples"], record=shard))


def test_a_store_without_its_index_or_crc32c_is_refused_naming_the_shard(tiny_folder, tmp_path):
    built = tiny_store(tiny_folder, tmp_path / "built")
    for entry, drop, message in (("shard", "index", r"\(train/v000-000000.tar\) has no 'index'"),
                                 ("shard", "crc32c", r"\(train/v000-000000.tar\) has no 'crc32c'"),
                                 ("index", "crc32c", r"index \(train/v000-000000.idx.json\) has no 'crc32c'")):
        store = shutil.copytree(built, tmp_path / f"{entry}-{drop}")
        manifest = json.loads((store / "manifest.json").read_text())
        shard = manifest["splits"]["train"]["shards"][0]
        del (shard if entry == "shard" else shard["index"])[drop]
        (store / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(StoreError, match=message):
            list(open_store(store))
    store = shutil.copytree(built, tmp_path / "deleted")
    (store / "train" / "v000-000000.idx.json").unlink()
    with pytest.raises(StoreError, match=r"shard train/v000-000000.tar: its index train/v000-000000.idx.json "
                                         r"is missing"):
        list(open_store(store))


def test_shards_are_written_and_read_without_webdataset(tmp_path):
    """webdataset is a test extra: a fresh interpreter in which it cannot be imported writes a group and
    reads it back through the sample index."""
    script = f"""
import sys
sys.modules["webdataset"] = None  # any import of it raises ImportError
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
from test_tar_index import ITEMS, write_group
from latentstore.store.readers import iter_shard
store = Path({str(tmp_path)!r})
shard = write_group(store)["shards"][0]
keys = [s.key for s in iter_shard(store / shard["path"], shard["path"], len(ITEMS), record=shard)]
assert keys == [item + "_v000" for item in ITEMS], keys
print("read", len(keys))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0 and done.stdout.strip() == f"read {len(ITEMS)}", done.stderr
