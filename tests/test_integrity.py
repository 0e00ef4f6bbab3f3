"""Integrity on read: a damaged payload is a typed error naming the shard, on both backends, and
max_skips skips exactly the samples that can no longer be trusted."""
import io
import json
import shutil
import tarfile

import pytest

from latentstore import open_store
from latentstore.build.run import BuildConfig, build
from latentstore.commands.convert import convert
from latentstore.errors import StoreError
from latentstore.store.format import MANIFEST
from latentstore.commands.verify import verify

from conftest import count_digest_passes, recorded_files

ARGS = dict(coder="bmshj2018-hyperprior", quality=1, weights="untrained", dataset="imagefolder",
            split="train", variants=1, crop=64, shard_size=2)
FIELDS = ("y_hat", "label", "y_string")


@pytest.fixture(scope="module")
def stores(tiny_folder, tmp_path_factory):
    out = {}
    for fmt in ("webdataset", "zarr"):
        path = tmp_path_factory.mktemp(fmt)
        build(BuildConfig(root=str(tiny_folder), out=str(path), format=fmt, **ARGS), progress=False)
        out[fmt] = path
    return out


def copy(store, tmp_path):
    return shutil.copytree(store, tmp_path / "s")


def without_fast_crc(monkeypatch):
    """A machine where google-crc32c has only its pure-Python fallback: readers check each whole file's sha256."""
    import latentstore.store.checksum
    import latentstore.store.tar.reader
    for module in (latentstore.store.checksum, latentstore.store.tar.reader):
        monkeypatch.setattr(module, "CRC32C_IS_FAST", False)


def read_all(store, **kw):
    return list(open_store(store, fields=FIELDS, **kw))


def flip_in_member(shard, suffix, every=False):
    """Flip a byte in the first member named *suffix (in every such member: every sample of the shard)."""
    with tarfile.open(shard) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(suffix)]
    data = bytearray(shard.read_bytes())
    for member in members if every else members[:1]:
        data[member.offset_data + member.size // 2] ^= 0x02  # ".cls" "0" -> "2": still a valid label
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize("suffix", [".y_hat.npy", ".cls", ".y_string.bin"])
def test_a_flipped_payload_byte_in_a_tar_is_an_error_naming_the_shard_and_key(stores, tmp_path, suffix,
                                                                              monkeypatch):
    store = copy(stores["webdataset"], tmp_path)
    flip_in_member(store / "train" / "v000-000001.tar", suffix)
    with pytest.raises(StoreError, match=r"shard train/v000-000001.tar, key train_class0_img2_v000: bytes differ "
                                         r"from the shard index's checksum"):
        read_all(store)
    # without a fast CRC-32C the whole shard's sha256 is checked, and none of its samples is trusted
    without_fast_crc(monkeypatch)
    with pytest.raises(StoreError, match=r"shard train/v000-000001.tar: bytes differ from the manifest's checksum "
                                         r".* Its keys: train_class0_img2_v000, train_class1_img0_v000"):
        read_all(store)


def test_a_damaged_sample_index_is_an_error_naming_it(stores, tmp_path):
    store = copy(stores["webdataset"], tmp_path)
    index = store / "train" / "v000-000001.idx.json"
    index.write_text(index.read_text().replace('"keys"', '"keyz"'))
    with pytest.raises(StoreError, match=r"shard train/v000-000001.tar: its index train/v000-000001.idx.json "
                                         r"differs from its record \(checksum\)"):
        read_all(store)
    index.unlink()
    with pytest.raises(StoreError, match=r"^shard train/v000-000001.tar: its index train/v000-000001.idx.json is "
                                         r"missing; run `latentstore verify`"):
        read_all(store)


@pytest.mark.parametrize("backend", ["webdataset", "zarr"])
def test_the_read_check_is_the_crc32c_or_without_a_fast_one_the_sha256(stores, tmp_path, backend, monkeypatch):
    """Every file is recorded with a CRC-32C, which readers check; where google-crc32c has no fast build
    they check the sha256 instead, so damage is caught either way. A record without its CRC-32C is damaged."""
    store = copy(stores[backend], tmp_path)
    manifest = json.loads((store / MANIFEST).read_text())
    files = [f for shard in manifest["splits"]["train"]["shards"] for f in shard.get("files", [shard])]
    assert all(len(f["crc32c"]) == 8 for f in files)
    label_file = next(f for f in files if backend == "webdataset" or "/label/" in f["path"])
    if backend == "zarr":  # a tar shard's samples are checked by its index's CRCs instead (above)
        # A wrong CRC with the right sha256: only a reader that checks the CRC refuses it.
        crc = label_file["crc32c"]
        label_file["crc32c"] = f"{int(crc, 16) ^ 1:08x}"
        (store / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(StoreError, match="differ"):
            read_all(store)
        label_file["crc32c"] = crc
    # A record without its CRC-32C: the manifest is damaged, in one line naming the file.
    crc = label_file.pop("crc32c")
    (store / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=rf"shard \d+ (file \d+ )?\({label_file['path']}\) has no 'crc32c'"):
        read_all(store)
    label_file["crc32c"] = crc
    (store / MANIFEST).write_text(json.dumps(manifest))
    # No fast CRC-32C and a damaged file: the sha256 catches it.
    without_fast_crc(monkeypatch)
    assert len(read_all(store)) == 6
    path = store / label_file["path"]
    if backend == "webdataset":
        flip_in_member(path, ".cls")
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x02
        path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="differ"):
        read_all(store)


def test_max_skips_skips_exactly_the_damaged_sample_of_a_tar_shard_and_names_it(stores, tmp_path):
    store = copy(stores["webdataset"], tmp_path)
    flip_in_member(store / "train" / "v000-000001.tar", ".cls")
    ds = open_store(store, fields=FIELDS, max_skips=1)
    keys = [s["__key__"] for s in ds]
    assert len(keys) == 5 and "train_class1_img0_v000" in keys  # the shard's undamaged sample is read
    assert ds.skipped == [next(s for s in ds.skipped if "train/v000-000001.tar, key train_class0_img2_v000" in s)]
    with pytest.raises(StoreError, match="more than max_skips=0|train_class0_img2_v000"):
        read_all(store)


def test_max_skips_skips_every_sample_of_a_damaged_tar_shard_without_fast_crc(stores, tmp_path, monkeypatch):
    store = copy(stores["webdataset"], tmp_path)
    without_fast_crc(monkeypatch)
    flip_in_member(store / "train" / "v000-000001.tar", ".cls")
    ds = open_store(store, fields=FIELDS, max_skips=2)
    keys = [s["__key__"] for s in ds]
    assert len(keys) == 4 and not any(k.startswith("train_class0_img2") or k.startswith("train_class1_img0")
                                       for k in keys)
    assert len(ds.skipped) == 2 and all("train/v000-000001.tar" in s for s in ds.skipped)
    assert "train_class0_img2_v000" in "\n".join(ds.skipped)
    with pytest.raises(StoreError, match="more than max_skips=1"):
        read_all(store, max_skips=1)


def test_a_shard_with_more_samples_than_recorded_is_not_read_silently(stores, tmp_path):
    store = copy(stores["webdataset"], tmp_path)
    shard = store / "train" / "v000-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data))
        for m, data in members[:len(members) // 2]:  # one more sample, under another key
            extra = tarfile.TarInfo("zz" + m.name)
            extra.size = len(data)
            tar.addfile(extra, io.BytesIO(data))
    shard.write_bytes(buf.getvalue())
    ds = open_store(store, fields=FIELDS, max_skips=5)
    assert len(list(ds)) == 4 and len(ds.skipped) == 2, ds.skipped
    with pytest.raises(StoreError, match="train/v000-000000.tar"):
        read_all(store)


def zarr_chunks(store, array):
    return sorted(p for p in (store / "train" / array / "c").rglob("*") if p.is_file())


@pytest.mark.parametrize("array", ["label", "y_hat"])
def test_a_flipped_zarr_chunk_byte_is_an_error_naming_the_unit(stores, tmp_path, array):
    store = copy(stores["zarr"], tmp_path)
    chunk = zarr_chunks(store, array)[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"shard train/v000-00000\d: chunk file .* differs from its record"):
        read_all(store)
    ds = open_store(store, fields=FIELDS, max_skips=2)
    assert len(list(ds)) == 4 and len(ds.skipped) == 2


def test_a_damaged_zarr_array_description_is_a_typed_error_that_honours_max_skips(stores, tmp_path):
    store = copy(stores["zarr"], tmp_path)
    meta = store / "train" / "label" / "zarr.json"
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(StoreError, match=r"shard train/v000-00000\d"):
        read_all(store)
    ds = open_store(store, fields=FIELDS, max_skips=6)
    assert list(ds) == [] and len(ds.skipped) == 6


def test_a_truncated_manifest_is_a_clear_error(stores, tmp_path):
    store = copy(stores["webdataset"], tmp_path)
    (store / MANIFEST).write_text((store / MANIFEST).read_text()[:100])
    with pytest.raises(StoreError, match=r"manifest.json is damaged .*not valid JSON"):
        open_store(store)


def test_a_clean_epoch_after_one_over_the_skip_budget_reads(tiny_folder, tmp_path):
    store = tmp_path / "s"
    build(BuildConfig(root=str(tiny_folder), out=str(store), **{**ARGS, "variants": 2}), progress=False)
    flip_in_member(store / "train" / "v000-000001.tar", ".cls", every=True)  # variant 0 only: epochs 0, 2, ...
    ds = open_store(store, fields=FIELDS, max_skips=1)
    with pytest.raises(StoreError, match="more than max_skips=1"):
        list(ds)
    ds.set_epoch(1)
    assert len(list(ds)) == 6 and ds.skipped == []


def test_ranks_yield_len_items_each_under_max_skips(stores, tmp_path):
    """DDP steps in lockstep: a rank whose samples were skipped still yields len(ds) items
    (repeating one it read), and a rank left with nothing readable says so instead of yielding
    fewer (which would hang the other ranks' collectives)."""
    store = copy(stores["webdataset"], tmp_path)
    flip_in_member(store / "train" / "v000-000001.tar", ".cls", every=True)  # samples 2 and 3 of 6
    for rank in range(2):
        ds = open_store(store, fields=FIELDS, shuffle=False, rank=rank, world=2, max_skips=2)
        items = list(ds)
        assert len(items) == len(ds) == 3
        assert len({s["__key__"] for s in items}) == 2  # one of them repeated
    ds = open_store(store, fields=FIELDS, shuffle=False, rank=1, world=3, max_skips=2)
    with pytest.raises(StoreError, match="rank 1 was damaged and skipped"):
        list(ds)


def test_start_given_to_open_store_survives_the_first_set_epoch(stores):
    """A resumed run opens the store at its offset, then sets the epoch: the offset holds for
    that epoch, and the next epoch starts from 0."""
    ds = open_store(stores["webdataset"], fields=FIELDS, shuffle=False, start=4)
    ds.set_epoch(0)
    assert [s["__key__"] for s in ds] == [s["__key__"] for s in open_store(stores["webdataset"], fields=FIELDS,
                                                                           shuffle=False)][4:]
    ds.set_epoch(1)
    assert len(list(ds)) == len(ds) == 6


@pytest.mark.parametrize("backend", ["webdataset", "zarr"])
def test_verify_digests_every_file_once(stores, monkeypatch, backend):
    """verify checks each file's digests itself (a tar shard's sample index too), then reads its samples
    without the reader's whole-file check."""
    passes = count_digest_passes(monkeypatch, stores[backend])
    report = verify(stores[backend])
    assert report.ok and report.samples == 6, report.problems
    assert passes == recorded_files(stores[backend], indexes=True)


@pytest.mark.parametrize("backend", ["webdataset", "zarr"])
def test_convert_digests_every_source_file_once(stores, monkeypatch, tmp_path, backend):
    passes = count_digest_passes(monkeypatch, stores[backend])
    other = "zarr" if backend == "webdataset" else "webdataset"
    convert(stores[backend], tmp_path / other, other, progress=False)
    assert passes == recorded_files(stores[backend])
    assert verify(tmp_path / other).ok


def test_verify_names_a_damaged_or_stray_sample_index(stores, tmp_path):
    store = copy(stores["webdataset"], tmp_path)
    index = store / "train" / "v000-000001.idx.json"
    index.write_text(index.read_text().replace('"keys"', '"keyz"'))
    (store / "train" / "v000-000009.idx.json").write_text("{}")
    problems = verify(store).problems
    assert any(p.startswith("shard train/v000-000001.tar: its index train/v000-000001.idx.json differs from its "
                            "record (checksum)") for p in problems), problems
    assert any(p.startswith("train/v000-000009.idx.json: stray file") for p in problems), problems
    assert len(problems) == 2, problems
