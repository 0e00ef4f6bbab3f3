"""Remote stores through fsspec, against real servers on 127.0.0.1: moto's S3 server, an HTTP server with
Range support, and a fault-injecting proxy in front of the S3 server (latentstore/store/location.py, remote.py, commands/copy.py)."""
import http.client
import http.server
import os
import socket
import threading
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from latentstore import open_store
from latentstore.commands.cli import main as cli_main
from latentstore.commands.copy import copy_store
from latentstore.errors import ConfigError, StoreError

from conftest import tiny_store
from relay import Relay

moto_server = pytest.importorskip("moto.server", reason="tests need moto[server] (pip install 'moto[server]')")
pytest.importorskip("s3fs", reason="tests need s3fs (pip install 'latentstore[s3]')")

KEY_ID, SECRET = "AKIATESTKEYID0000001", "test-secret-key-do-not-show"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free loopback port, reached through AWS_ENDPOINT_URL; yields its URL."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    url = f"http://127.0.0.1:{server._port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                           "AWS_DEFAULT_REGION", "LATENTSTORE_CACHE")}
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET,
                      AWS_DEFAULT_REGION="us-east-1", LATENTSTORE_CACHE=str(tmp_path_factory.mktemp("cache")))
    import s3fs
    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir("bucket")
    yield url
    server.stop()
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def local(tiny_folder, tmp_path_factory, tiny_store_copy):
    return tiny_store_copy(tiny_folder, tmp_path_factory.mktemp("remote") / "store", variants=2, shard_size=2)


@pytest.fixture(scope="module")
def published(s3, local):
    copy_store(str(local), "s3://bucket/stores/tiny")
    return "s3://bucket/stores/tiny"


def samples(ds, workers=0):
    return list(DataLoader(ds, batch_size=None, num_workers=workers))


def assert_same(got, want):
    assert [s["__key__"] for s in got] == [s["__key__"] for s in want]
    for a, b in zip(got, want):
        assert torch.equal(a["y_hat"], b["y_hat"]) and torch.equal(a["label"], b["label"])


def test_a_store_copied_to_s3_reads_sample_for_sample_as_the_local_one(published, local, tmp_path):
    for epoch in (0, 1):  # both variants
        want = open_store(local, shuffle=True, seed=3)
        got = open_store(published, shuffle=True, seed=3, cache_dir=tmp_path / "cache")
        want.set_epoch(epoch), got.set_epoch(epoch)
        assert_same(samples(got, workers=2), samples(want))
    want, got = open_store(local, shuffle=True, seed=3), open_store(published, shuffle=True, seed=3, cache_dir=tmp_path)
    want.set_epoch(1, start=3), got.set_epoch(1, start=3)  # a mid-epoch resume starts where the local one does
    assert_same(samples(got, workers=2), samples(want))
    ds = open_store(published, cache_dir=tmp_path / "cache2")
    assert torch.equal(ds[ds.keys()[1]]["y_hat"], open_store(local)[1]["y_hat"])


def test_copy_checks_every_file_and_resumes_where_it_stopped(published, local, s3):
    import s3fs
    fs = s3fs.S3FileSystem()
    shard = next(p for p in fs.find("bucket/stores/tiny") if p.endswith(".tar"))
    fs.rm(shard)
    done = copy_store(str(local), published)
    assert done["copied"] == 2 and done["skipped"] == len(fs.find("bucket/stores/tiny")) - 2  # the shard, manifest


def test_a_copy_with_a_damaged_source_file_stops_without_a_manifest_and_resumes_once_mended(local, tmp_path,
                                                                                           capsys):
    """`latentstore copy --jobs 3`: the first damaged file stops the copy, naming it, before manifest.json is
    written, so no reader sees the half-copied store; once the source is mended a rerun copies the rest."""
    import shutil
    source, target = tmp_path / "source", tmp_path / "target"
    shutil.copytree(local, source)
    shard = sorted(source.rglob("*.tar"))[1]
    good = shard.read_bytes()
    shard.write_bytes(good[:700] + bytes([good[700] ^ 1]) + good[701:])
    with pytest.raises(SystemExit):
        cli_main(["copy", str(source), str(target), "--jobs", "3", "--quiet"])
    assert f"{shard}: CRC-32C differs from the manifest's; the source is damaged" in capsys.readouterr().err
    assert not (target / "manifest.json").exists()
    shard.write_bytes(good)
    cli_main(["copy", str(source), str(target), "--jobs", "3", "--quiet"])
    assert "already present" in capsys.readouterr().out
    assert_same(samples(open_store(target)), samples(open_store(local)))


def test_a_copy_of_big_files_runs_fewer_jobs_than_asked(local, tmp_path, monkeypatch):
    """Each job holds a file twice in memory: with room for one largest file, one job copies them all."""
    import threading
    import latentstore.commands.copy as copy
    largest = max(p.stat().st_size for p in Path(local).rglob("*.tar"))
    monkeypatch.setattr(copy, "MEMORY", 2 * largest)
    threads = set()
    done = copy.copy_store(str(local), str(tmp_path / "target"), jobs=8,
                           progress=lambda rel, what: rel == "manifest.json" or threads.add(threading.get_ident()))
    files = [p for p in Path(local).rglob("*") if p.is_file() and not p.name.startswith(".")]  # not lock files
    assert len(threads) == 1 and done["copied"] == len(files)


def test_verify_and_info_read_a_store_url(published, capsys):
    assert cli_main(["verify", published, "--no-sources", "--quiet"]) in (0, None)
    assert "OK" in capsys.readouterr().out
    # --decode: CompressAI decodes samples of the downloaded store and compares ŷ bit for bit
    assert cli_main(["verify", published, "--no-sources", "--quiet", "--decode", "2"]) in (0, None)
    assert "2 decoded by CompressAI: OK" in capsys.readouterr().out
    assert cli_main(["info", published]) in (0, None)
    assert published in capsys.readouterr().out


def test_classify_trains_a_few_steps_from_s3(published, tmp_path, monkeypatch):
    from test_train import args, classify
    monkeypatch.setenv("LATENTSTORE_CACHE", str(tmp_path / "cache"))
    classify.main(args(published, tmp_path / "run", "--epochs", "1", "--max-steps", "2", "--workers", "2"))
    assert (tmp_path / "run").is_dir()


def test_a_missing_store_gives_one_line_naming_the_url_without_credentials(s3, tmp_path):
    with pytest.raises(StoreError) as caught:
        open_store("s3://bucket/nothing-here", cache_dir=tmp_path, storage_options={"secret": SECRET, "key": KEY_ID})
    message = str(caught.value)
    assert "\n" not in message and "s3://bucket/nothing-here/manifest.json: not found" in message
    with pytest.raises(StoreError) as caught:  # credentials in the URL itself: refused, and not shown
        open_store(f"s3://{KEY_ID}:{SECRET}@bucket/nothing-here?X-Amz-Signature=sig0123456789", cache_dir=tmp_path)
    assert "\n" not in str(caught.value) and "s3://bucket/nothing-here/manifest.json" in str(caught.value)
    for secret in (KEY_ID, SECRET, "sig0123456789"):
        assert secret not in message and secret not in str(caught.value)


def test_a_trainer_refuses_credentials_in_the_store_url_without_showing_them(tmp_path, capsys):
    from test_train import args, classify
    url = f"s3://{KEY_ID}:{SECRET}@bucket/stores/tiny"
    with pytest.raises(SystemExit):
        classify.main(args(url, tmp_path / "run"))
    err = capsys.readouterr().err
    assert "s3://bucket/stores/tiny" in err and KEY_ID not in err and SECRET not in err


def test_a_missing_protocol_package_names_the_extra(tmp_path):
    import importlib.util
    missing = [(url, extra) for url, extra, package in (("gs://bucket/store", "gcs", "gcsfs"),
                                                       ("az://container/store", "azure", "adlfs"))
               if importlib.util.find_spec(package) is None]
    assert missing, "install neither gcsfs nor adlfs in the test environment, or add a protocol here"
    for url, extra in missing:
        with pytest.raises(ConfigError) as caught:
            open_store(url, cache_dir=tmp_path)
        assert f"pip install 'latentstore[{extra}]'" in str(caught.value) and "\n" not in str(caught.value)


# --------------------------------------------------------------------------- HTTP with Range

class Server(http.server.ThreadingHTTPServer):
    """A threading HTTP server that queues the connections a reader opens at once (FILE_THREADS, and
    PREFETCH_THREADS more): with the default backlog of 5, a dropped SYN is sent again after a second."""
    request_queue_size = 64


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, honouring single byte ranges (206) as object storage does."""

    def log_message(self, *args):
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        spec = self.headers.get("Range")
        if not path.is_file() or not spec:
            return super().send_head()
        data = path.read_bytes()
        first, _, last = spec.removeprefix("bytes=").partition("-")
        first, last = int(first or 0), min(int(last) if last else len(data) - 1, len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        import io
        return io.BytesIO(data[first:last + 1])


@pytest.fixture
def http_store(local):
    handler = lambda *a, **k: RangeHandler(*a, directory=str(local), **k)  # noqa: E731
    server = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_store_served_over_http_reads_as_the_local_one(http_store, local, tmp_path):
    got = open_store(http_store, cache_dir=tmp_path)
    assert_same(samples(got), samples(open_store(local)))
    with pytest.raises(StoreError, match=r"not found") as caught:
        open_store(http_store + "/elsewhere", cache_dir=tmp_path)
    assert "\n" not in str(caught.value) and f"{http_store}/elsewhere/manifest.json" in str(caught.value)


# --------------------------------------------------------------------------- faults

class FaultProxy(Relay):
    """Forwards to the S3 server; request n fails when n % 3 == 1: alternately a 503 and a dropped connection."""
    count = [0]
    faults = [0]
    lock = threading.Lock()

    def intercept(self) -> bool:
        with self.lock:
            n = self.count[0] = self.count[0] + 1
        if n % 3 != 1:
            return False
        with self.lock:
            self.faults[0] += 1
        if n % 2:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        return True


def test_an_epoch_through_a_faulty_proxy_reads_every_sample_exactly_once(published, local, s3, tmp_path):
    FaultProxy.upstream = ("127.0.0.1", int(s3.rsplit(":", 1)[1]))
    server = Server(("127.0.0.1", 0), FaultProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        options = {"endpoint_url": f"http://127.0.0.1:{server.server_address[1]}", "skip_instance_cache": True}
        got = open_store(published, storage_options=options, cache_dir=tmp_path)
        assert_same(samples(got), samples(open_store(local)))
        assert FaultProxy.faults[0] >= 3  # faults were injected, and survived
    finally:
        server.shutdown()
        server.server_close()


def test_a_zarr_store_reads_from_s3_as_the_local_one(s3, tiny_folder, tmp_path):
    local = tiny_store(tiny_folder, tmp_path / "zarr", variants=1, shard_size=2, format="zarr")
    copy_store(str(local), "s3://bucket/stores/zarr")
    got = open_store("s3://bucket/stores/zarr", cache_dir=tmp_path / "cache")
    assert_same(samples(got), samples(open_store(local)))
    assert torch.equal(got[got.keys()[2]]["y_hat"], open_store(local)[2]["y_hat"])


def test_a_zarr_store_fetches_only_the_arrays_its_reader_reads(s3, tiny_folder, tmp_path):
    local = tiny_store(tiny_folder, tmp_path / "zarr", variants=1, shard_size=2, format="zarr")
    copy_store(str(local), "s3://bucket/stores/zarr-fields")
    cache = tmp_path / "cache"

    def fetched_arrays():
        chunks = [p.relative_to(cache).parts for p in cache.rglob("*") if p.is_file() and "c" in p.parent.parts]
        return {parts[2] for parts in chunks}  # <mirror>/train/<array>/c/...
    lean = open_store("s3://bucket/stores/zarr-fields", fields=("y_hat", "label"), cache_dir=cache)
    assert_same(samples(lean, workers=2), samples(open_store(local, fields=("y_hat", "label"))))
    assert fetched_arrays() == {"y_hat", "label", "meta", "present"}  # no symbols, strings, means ...
    full = open_store("s3://bucket/stores/zarr-fields", fields=("y_hat", "label", "symbols"), cache_dir=cache)
    got, want = samples(full), samples(open_store(local, fields=("y_hat", "label", "symbols")))
    assert_same(got, want)
    assert all(torch.equal(a["symbols"], b["symbols"]) for a, b in zip(got, want))
    assert "symbols" in fetched_arrays()


def test_a_shard_damaged_in_the_bucket_is_refused_naming_its_url_and_a_lenient_reader_skips_its_sample(
        published, s3, tmp_path, capsys):
    import s3fs
    fs = s3fs.S3FileSystem()
    fs.cp("bucket/stores/tiny", "bucket/stores/damaged", recursive=True)
    shard = sorted(p for p in fs.find("bucket/stores/damaged") if p.endswith(".tar"))[0]
    data = bytearray(fs.cat_file(shard))
    data[700] ^= 1
    fs.pipe_file(shard, bytes(data))
    with pytest.raises(StoreError) as caught:
        samples(open_store("s3://bucket/stores/damaged", cache_dir=tmp_path))
    assert f"s3://{shard}: CRC-32C differs" in str(caught.value)
    # a lenient reader skips the damaged sample, as it does a local store's, and names it
    with pytest.warns(UserWarning, match=f"s3://{shard}: CRC-32C differs"):
        lenient = open_store("s3://bucket/stores/damaged", cache_dir=tmp_path, max_skips=1)
        keys = [s["__key__"] for s in samples(lenient)]
    assert len(keys) == len(samples(open_store(published))) - 1
    assert len(lenient.skipped) == 1 and f"shard s3://{shard}, key" in lenient.skipped[0]
    assert lenient.skipped[0].split("key ")[1].split(":")[0] not in keys
    with pytest.raises(StoreError) as caught:  # a strict reader does not take the damaged copy kept in the cache
        samples(open_store("s3://bucket/stores/damaged", cache_dir=tmp_path))
    assert f"s3://{shard}: CRC-32C differs" in str(caught.value)
    with pytest.raises(SystemExit) as verdict:
        cli_main(["verify", "s3://bucket/stores/damaged", "--no-sources", "--quiet"])
    assert verdict.value.code == 1
    assert f"BAD  shard {shard.removeprefix('bucket/stores/damaged/')}" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [0, 2])
def test_the_cache_stays_under_its_limit(published, local, tmp_path, monkeypatch, workers):
    shard_bytes = max(p.stat().st_size for p in Path(local).rglob("*.tar"))
    monkeypatch.setenv("LATENTSTORE_CACHE_GB", str(2.5 * shard_bytes / 2**30))
    cache = tmp_path / "cache"
    assert_same(samples(open_store(published, cache_dir=cache), workers), samples(open_store(local)))
    held = sum(p.stat().st_size for p in cache.rglob("*.tar"))
    assert 0 < held <= 2.5 * shard_bytes


def test_a_cache_under_its_limit_is_listed_once_not_after_every_fetch(published, tmp_path, monkeypatch):
    import json
    import latentstore.store.remote as mirror
    walks, real_walk = [], os.walk
    monkeypatch.setattr(mirror.os, "walk", lambda *a, **k: walks.append(a) or real_walk(*a, **k))
    cache = tmp_path / "cache"
    ds = open_store(published, cache_dir=cache)
    assert len(samples(ds)) == sum(s["samples"] for s in ds.shards()) and len(ds.shards()) > 2
    assert len(walks) == 1  # the first fetch found no record of the cache's size; the others added theirs
    recorded = json.loads((cache / mirror.USAGE).read_text())["bytes"]
    sizes = [p.stat().st_size for p in cache.rglob("*") if p.is_file() and p.name != mirror.USAGE]
    # a file put while another thread lists the cache is counted twice: an overcount only brings the next
    # listing forward (FILE_THREADS threads fetch here)
    assert sum(sizes) <= recorded <= sum(sizes) + mirror.FILE_THREADS * max(sizes)


def test_a_shard_checked_on_arrival_is_not_checked_again_and_one_cached_before_is_checked_once(
        published, tmp_path, monkeypatch):
    """A shard's bytes are checked whole (size, CRC-32C) on arrival in the cache, and its readers in the same
    job do not check each sample's CRC-32C again. A later job checks the cached shards as a local store's,
    once per process: a fetch marks a cached file recently used by its access time, not its mtime, which
    the readers remember checked samples by (a touched mtime made every epoch check them again). A byte
    flipped in the cache between the jobs is then caught, naming the shard and the key."""
    import google_crc32c
    import latentstore.store.remote as mirror
    import latentstore.store.tar.reader as tar_reader

    class Counting:  # the reader's CRC-32C, counting the sample spans it checks
        spans = 0

        @staticmethod
        def value(data):
            Counting.spans += len(data) > 4096  # an index is JSON of a few hundred bytes; a sample's span is larger
            return google_crc32c.value(data)
    monkeypatch.setattr(tar_reader, "google_crc32c", Counting)
    monkeypatch.setattr(mirror, "_OPEN", {})
    first = samples(open_store(published, cache_dir=tmp_path))
    assert Counting.spans == 0  # every shard arrived in this job, checked whole
    def later_job():  # a new process: no store open, no sample checked yet
        monkeypatch.setattr(mirror, "_OPEN", {})
        monkeypatch.setattr(tar_reader, "_CHECKED_SAMPLES", {})
        return open_store(published, cache_dir=tmp_path)
    later = later_job()
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.tar")}
    assert_same(samples(later), first)
    assert Counting.spans == len(first)  # its first epoch checks every sample once
    assert_same(samples(later), first)
    assert Counting.spans == len(first)  # its second none again
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.tar")} == mtimes
    for cached in mtimes:  # shards fetched again by a later job, beside the sample indexes an earlier one cached
        cached.unlink()
    assert_same(samples(later_job()), first)
    assert Counting.spans == len(first)  # checked on arrival: none again

    shard = later.shards()[0]
    cached = later.path / shard["path"]
    data = bytearray(cached.read_bytes())
    data[1024] ^= 1  # in the first sample's bytes, the size kept: bit rot in a copy an earlier job cached
    cached.write_bytes(bytes(data))
    os.utime(cached, ns=(cached.stat().st_mtime_ns - 10**9,) * 2)  # older than the next job's opening
    with pytest.raises(StoreError, match=rf"shard {published}/{shard['path']}, key \S+: bytes differ") as caught:
        samples(later_job())
    assert f"its copy in the cache, {cached}" in str(caught.value)
    with pytest.raises(StoreError, match=rf"shard {published}/{shard['path']}, key \S+: bytes differ") as caught:
        later_job()[first[0]["__key__"]]  # a sample read alone, by key
    assert f"its copy in the cache, {cached}" in str(caught.value)


def test_a_fetched_shard_is_not_evicted_before_its_reader_releases_it(published, tmp_path, monkeypatch):
    """A shard fetched ahead stays until read, whichever reader of the cache trims it (each holds its own lock
    files, as DataLoader workers do); released, it goes as any other."""
    from latentstore.store.remote import Remote
    monkeypatch.setenv("LATENTSTORE_CACHE_GB", "0")  # every fetch and release trims all it may
    mine, other = Remote(published, cache_dir=tmp_path), Remote(published, cache_dir=tmp_path)
    records = open_store(published, cache_dir=tmp_path).shards()[:2]
    first, second = [mine.mirror / r["path"] for r in records]
    mine.fetch_shard(records[0])
    other.fetch_shard(records[1])  # its trim would take the least recently used shard: the first
    assert first.is_file() and second.is_file()
    mine.release(records[0])
    assert not first.is_file() and second.is_file()
    other.release(records[1])
    assert not second.is_file()


def test_persistent_workers_read_again_shards_deleted_from_the_cache_between_passes(published, local, tmp_path):
    """A pass leaves no file pinned: a persistent worker that kept the pins of its last pass held off the
    other worker's download of those files, once deleted, and the two waited on each other for ever."""
    import threading
    per_epoch = open_store(local).samples_per_rank()
    # one batch an epoch: worker 0 reads epochs 0 and 2 (variant 0), worker 1 epochs 1 and 3 (variant 1), and
    # each prefetches into the next epochs
    ds = open_store(published, cache_dir=tmp_path, shuffle=True, batch_size=per_epoch)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    data = [s["path"] for s in ds.info["shards"]]
    passes = []

    def two_passes():
        for _ in range(2):
            ds.set_epoch(0, until=4)
            passes.append([key for batch in loader for key in batch["__key__"]])
            for rel in data:  # as a user clearing the cache does, or another tool evicting from it
                (ds.path / rel).unlink(missing_ok=True)
    reader = threading.Thread(target=two_passes, daemon=True)
    reader.start()
    reader.join(timeout=120)
    assert not reader.is_alive(), "the second pass waits on a download lock"
    want = open_store(local, shuffle=True, batch_size=per_epoch)
    want.set_epoch(0, until=4)
    assert passes == [[key for batch in want for key in batch["__key__"]]] * 2


def test_the_next_window_s_shards_are_fetched_while_the_current_one_is_read(published, tmp_path, monkeypatch):
    monkeypatch.setattr("latentstore.read.dataset.PREFETCH_WINDOWS", 1)  # the lookahead is bounded: one window here
    ds = open_store(published, cache_dir=tmp_path)  # no shuffle: a window is one shard, in store order
    shards = ds.shards()
    it = iter(ds)
    next(it)  # the first shard is read; the second is on its way, the third not yet asked for
    for future in list(ds.remote._pending.values()):
        future.result()
    assert [(ds.path / s["path"]).is_file() for s in shards[:3]] == [True, True, False]
    assert len(list(it)) == sum(s["samples"] for s in shards) - 1


def test_eval_reads_a_store_url_as_the_local_store(s3, tmp_path, tiny_folder, tmp_path_factory):
    import json
    import test_eval
    local = test_eval.cls_store.__wrapped__(tiny_folder, tmp_path_factory)
    ckpt = test_eval.make_checkpoint(tmp_path / "run" / "last.pt", local)
    copy_store(str(local), "s3://bucket/stores/eval")
    records = []
    for store in (str(local), "s3://bucket/stores/eval"):
        out = tmp_path / f"eval{len(records)}.json"
        assert test_eval._load_script("classify").main(["--store", store, "--checkpoint", str(ckpt), "--out", str(out),
                                                        "--device", "cpu", "--batch-size", "4", "--quiet"]) == 0
        records.append(json.loads(out.read_text()))
    assert records[1]["store"]["path"] == "s3://bucket/stores/eval"
    for name in ("samples", "top1", "bits", "pixels", "matches_manifest"):
        assert records[0][name] == records[1][name]
