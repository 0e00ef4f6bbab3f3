"""Loader workers vs the DataLoader's own floor, locally and through object storage (issue 27), in one run.

    python benchmarks/bench_workers.py --work /tmp/bench-workers            # 1,024 samples (64 images x 16 variants)
    python benchmarks/bench_workers.py --work /tmp/bw --images 512          # 8,192 samples (~15 min to build)

Store: bmshj2018-hyperprior q1, seeded untrained weights, 224 crops (ŷ 192x16x16 float16), ``--images``
resized demo photos x 16 variants, 64 images per shard; built once into ``--work`` and reused. It is data
for the loader, not a codec test. Every pass reads all 16 variants (``set_epoch(e, until=e + 16)``).

Side by side, batch 32, ŷ as stored (float16), ``DataLoader(batch_size=None, persistent_workers=True)``:
  store     open_store(fields=y_hat,label, shuffle=True, batch_size=32, drop_last=True, y_hat_dtype=None)
  floor     an IterableDataset yielding ready batches of the same shapes, dtypes and key lists, dealt to the
            workers as the store deals them: what the DataLoader itself allows
  zarr      the same samples as a Zarr store (``latentstore convert``, built once beside the store)
  remote    the store in moto's S3 server on 127.0.0.1, read through a proxy adding ``--latency`` ms per
            request; the cache's shard data are deleted before each pass (every shard fetched again)
  http      the same through the same proxy from nginx, a native HTTP server, where it is installed
            (``apt-get install nginx-light``): how much of the remote figure is the test server's
  *-zarr    the Zarr store, remote: a reader fetches only the arrays it reads (ŷ, labels, keys)
  *-server  what that server and proxy deliver without latentstore: every file of a pass the loader fetches,
            fetched as the loader does (one ranged GET each), 2 workers x FILE_THREADS at a time, as samples/s
            (the remote loader's ceiling here), and the CPU seconds per GB that the server, the proxy and the
            client spend (what the remote target costs this machine before the loader does any work)
Printed per pass: samples/s, the first batch's time and a steady batch's time. Best and median of
``--passes``: other jobs on a shared machine slow every pipeline; the load average is printed.

``--split-cpus``: the servers and the proxy run on CPUs of their own (the second half of this process's),
the loader, its workers and its fetches on the first half, every row included. On a cluster the object
store is another machine and the network moves the bytes; on one small machine the server and the proxy
otherwise take the loader's CPUs. Both runs are worth printing: shared shows the whole machine's cost,
split the loader's own, local and remote on the same CPUs.
"""
from __future__ import annotations

import argparse
import fcntl
import multiprocessing
import os
import shutil
import subprocess
import socket
import socketserver
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "latentstore" / "data" / "demo-imagenet"
VARIANTS = 16
FIELDS = ("y_hat", "label")


def portable_numerics() -> None:
    """The portable numerics pins and the store's torch thread count, as tests/conftest.py sets them for the
    tests' in-process builds (importing it would need pytest, which the GPU machine lacks)."""
    from latentstore.store.numerics import PORTABLE_ENV
    from latentstore.store.threads import STORE_THREADS
    os.environ.update(PORTABLE_ENV)
    torch.set_num_threads(STORE_THREADS)


def zarr_twin(store: Path) -> Path:
    """The same samples as a Zarr store (``latentstore convert``), built once beside `store`: each field in
    arrays of its own, so a remote reader of ŷ and labels fetches only those (a tar shard is fetched whole)."""
    from latentstore.commands.convert import convert
    out = store.with_name(store.name + "-zarr")
    if not (out / "manifest.json").is_file():
        convert(store, out, "zarr", progress=False)
    return out


def build_store(work: Path, images: int, encoders: int = 1) -> Path:
    from PIL import Image
    from latentstore.build.run import BuildConfig, build
    out = work / f"store-{images}"
    if (out / "manifest.json").is_file():
        return out
    root = work / f"images-{images}"
    photos = sorted(DEMO.rglob("*.JPEG"))
    for i in range(images):
        folder = root / "train" / f"c{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        photo = Image.open(photos[i % len(photos)]).convert("RGB")
        photo.resize((240 + i % 50, 236 + i % 30)).save(folder / f"{i}.png")
    build(BuildConfig(coder="bmshj2018-hyperprior", quality=1, weights="untrained", dataset="imagefolder",
                      split="train", variants=VARIANTS, crop=224, root=str(root), out=str(out), shard_size=64,
                      encoders=encoders),
          progress=False)
    return out


class Floor(IterableDataset):
    """Ready batches of the store's shapes, dtypes and key lists; batch i to worker i mod workers."""

    def __init__(self, batches: int, y_shape, y_dtype):
        self.batches, self.y_shape, self.y_dtype = batches, y_shape, y_dtype

    def __iter__(self):
        w = get_worker_info()
        wid, k = (w.id, w.num_workers) if w else (0, 1)
        for _ in range(wid, self.batches, k):
            yield {"y_hat": torch.zeros(self.y_shape, dtype=self.y_dtype), "label": torch.zeros(32, dtype=torch.int64),
                   "__key__": [f"train_c0_{j:05d}_v000" for j in range(32)],
                   "__shard__": ["train/v000-000000.tar"] * 32}


def passes(name: str, make, workers: int, n: int, before_pass=None) -> list[dict]:
    data = make()
    loader = DataLoader(data, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
    rows = []
    for p in range(n):
        if before_pass is not None:
            before_pass(data)
        if hasattr(data, "set_epoch"):
            data.set_epoch(VARIANTS * p, until=VARIANTS * (p + 1))
        began, first, count, batches = time.perf_counter(), None, 0, 0
        for batch in loader:
            count, batches = count + len(batch["label"]), batches + 1
            first = first if first is not None else time.perf_counter() - began
        wall = time.perf_counter() - began
        rows.append({"name": name, "workers": workers, "rate": count / wall, "first_ms": first * 1e3,
                     "steady_ms": (wall - first) / max(batches - 1, 1) * 1e3})
        print(f"  {name:11} {workers} workers, pass {p}: {rows[-1]['rate']:8,.0f} samples/s, first batch "
              f"{rows[-1]['first_ms']:6.1f} ms, steady batch {rows[-1]['steady_ms']:5.1f} ms", flush=True)
    return rows


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_rate(name: str, fs, files: list, samples: int, threads: int, pids: dict) -> dict:
    """What a server and the proxy hand out without latentstore: one pass's shard files (tar and index,
    `files` as (path, bytes)) fetched `threads` at a time by `fs` as the loader fetches them (one ranged GET
    of the recorded size), no reader, no cache, no workers. Also the CPU seconds per GB moved that the server,
    the proxy (`pids`) and the client (this process) spent: what the transport itself costs on this machine."""
    pids = {**pids, "client": os.getpid()}
    cpu = {who: cpu_seconds(pid) for who, pid in pids.items()}
    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        fetched = sum(map(len, pool.map(lambda f: fs.cat_file(f[0], start=0, end=f[1]), files)))
    seconds = time.perf_counter() - began
    per_gb = {who: (cpu_seconds(pid) - cpu[who]) / (fetched / 1e9) for who, pid in pids.items()}
    print(f"  {name:18} {threads} at a time: {fetched / seconds / 1e6:6.1f} MB/s = {samples / seconds:8,.0f} "
          "samples/s; CPU s per GB: " + ", ".join(f"{who} {v:.2f}" for who, v in per_gb.items()), flush=True)
    return {"name": name, "workers": 2, "rate": samples / seconds, "cpu_per_gb": sum(per_gb.values()),
            "bytes_per_sample": fetched / samples}


def open_bench_store(store, **options):
    """The store as every row reads it: ŷ and labels, ŷ as stored, shuffled batches of 32."""
    from latentstore import open_store
    return open_store(store, **{"fields": FIELDS, "y_hat_dtype": None, "shuffle": True, "batch_size": 32,
                                "drop_last": True, **options})


def remote_rows(kind: str, store: Path, url: str, options: dict, fs, prefix: str, pids: dict, work: Path,
                passes_: int) -> list[dict]:
    """The loader over the store at `url` (2 persistent workers, the cache's shard data deleted before each
    pass so that every shard comes through the proxy again), then the server row: the files the loader
    fetches (a tar shard and its index; a Zarr unit's chunk files of ŷ, labels and keys) fetched by `fs`
    under `prefix`, without latentstore."""
    import json

    from latentstore.store.remote import FILE_THREADS
    from latentstore.store.paths import shard_files
    from latentstore.store.zarr.reader import arrays_read
    cache = work / f"cache-{kind}"
    shutil.rmtree(cache, ignore_errors=True)
    manifest = json.loads((store / "manifest.json").read_text())
    shards = [s for split in manifest["splits"].values() for s in split["shards"]]
    data = {f["path"] for s in shards for f in s.get("files", [s])}  # tar shards, Zarr chunk files

    def cold(dataset):  # the small files stay, as a store opened once keeps them
        for rel in data:
            (dataset.path / rel).unlink(missing_ok=True)
    rows = passes(kind, lambda: open_bench_store(url, cache_dir=cache, storage_options=options), 2, passes_,
                  before_pass=cold)
    arrays = arrays_read(FIELDS) if manifest.get("backend") == "zarr" else None
    files = [(f"{prefix}/{f['path']}", f["bytes"]) for s in shards for f in shard_files(s, arrays)]
    samples = sum(s["samples"] for s in shards)
    for _ in range(passes_):
        rows.append(server_rate(f"{kind}-server", fs, files, samples, 2 * FILE_THREADS, pids))
    shutil.rmtree(cache, ignore_errors=True)
    return rows


SERVER_CPUS: set | None = None  # --split-cpus: where the servers and the proxy run


def split_cpus() -> tuple[set, set]:
    """(the loader's CPUs, the servers'): this process's CPUs cut in two halves. Every thread of this process
    moves to the first (Linux pins threads one by one, and new ones inherit their creator's CPUs)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--split-cpus needs at least 2 CPUs")
    loader, servers = set(cpus[:len(cpus) // 2]), set(cpus[len(cpus) // 2:])
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), loader)
    # 2 workers on 1 CPU is what is measured here, not a mistake to warn of
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    return loader, servers


def on_server_cpus() -> None:
    """Run this process on the servers' CPUs, under --split-cpus (before it starts threads)."""
    if SERVER_CPUS:
        os.sched_setaffinity(0, SERVER_CPUS)


def start_nginx(root: Path, port: int, work: Path) -> subprocess.Popen:
    """nginx serving `root` on 127.0.0.1:`port` as one process (its CPU time is then its own), Range
    requests answered from the files (sendfile), folders listed (a Zarr store lists its files on open): a
    native server beside moto."""
    conf = work / "nginx.conf"
    temp = work / "nginx-temp"
    temp.mkdir(parents=True, exist_ok=True)
    conf.write_text(f"""daemon off; master_process off; worker_processes 1; user root;
pid {work}/nginx.pid; error_log {work}/nginx-error.log;
events {{ worker_connections 256; }}
http {{ access_log off; sendfile on; tcp_nopush on; client_body_temp_path {temp}; proxy_temp_path {temp};
  fastcgi_temp_path {temp}; uwsgi_temp_path {temp}; scgi_temp_path {temp};
  server {{ listen 127.0.0.1:{port}; root {root}; autoindex on; }} }}
""")
    return subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=on_server_cpus)


class LatencyProxy(socketserver.BaseRequestHandler):
    """Relays each request to `upstream` after `delay` seconds and moves the reply's body from socket to
    socket in the kernel (os.splice through a pipe): a network adds latency without costing the client's
    machine CPU, and a relay copying every byte through Python cost ~0.7 CPU s per GB here, a third of
    what this 2-core machine has at the target rate. Keep-alive; bodies of known length only; reads (GET,
    HEAD): an upload that waits for "100 Continue" stalls here (the bench uploads to the server directly)."""
    upstream: tuple = ()
    delay = 0.0

    def handle(self):
        client, upstream = self.request, None
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe = os.pipe()
        fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, 1 << 20)  # 16x the default: fewer splice calls per reply
        try:
            while True:
                request = _read_message(client)
                if request is None:
                    return
                time.sleep(self.delay)
                if upstream is None:
                    upstream = socket.create_connection(self.upstream)
                    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                head, body_start, length = request
                upstream.sendall(head + body_start + _recv_exactly(client, length - len(body_start)))
                reply = _read_message(upstream)
                if reply is None:
                    raise ConnectionError("the server closed the connection")
                head, body_start, length = reply
                if head.split(b" ", 2)[1] in (b"204", b"304") or request[0].startswith(b"HEAD "):
                    length = len(body_start)
                if length is None:  # a folder listing (Zarr stores list theirs on open)
                    client.sendall(head)
                    _relay_chunks(upstream, client, body_start)
                    continue
                client.sendall(head + body_start)
                _splice(upstream, client, length - len(body_start), pipe)
        except (ConnectionError, OSError):
            return
        finally:
            for fd in pipe:
                os.close(fd)
            if upstream is not None:
                upstream.close()


def _read_message(sock) -> tuple | None:
    """(head up to the blank line, the body bytes read with it, Content-Length or None for a chunked body)
    of the next HTTP message; None when the peer closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            length = None
    return head + b"\r\n\r\n", rest, length


def _relay_chunks(src, dst, data: bytes) -> None:
    """Relay a chunked body (`data`: its bytes read so far) up to its last, empty chunk (no trailers)."""
    while True:
        while b"\r\n" not in data:
            data += _recv_exactly(src, 1)
        line, _, data = data.partition(b"\r\n")
        size = int(line.split(b";")[0], 16) + 2  # the chunk and its CRLF
        if len(data) < size:
            data += _recv_exactly(src, size - len(data))
        dst.sendall(line + b"\r\n" + data[:size])
        if size == 2:
            return
        data = data[size:]


def _recv_exactly(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed mid-body")
        data += chunk
    return data


def _splice(src, dst, n: int, pipe: tuple) -> None:
    """Move `n` bytes from socket `src` to socket `dst` through `pipe`, in the kernel."""
    r, w = pipe
    while n > 0:
        moved = os.splice(src.fileno(), w, min(n, 1 << 20))
        if moved == 0:
            raise ConnectionError("closed mid-body")
        n -= moved
        while moved:
            moved -= os.splice(r, dst.fileno(), moved)


def serve_proxy(port: int, upstream: tuple, delay: float, cpus: set | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    LatencyProxy.upstream, LatencyProxy.delay = upstream, delay
    socketserver.ThreadingTCPServer.daemon_threads = True
    # The default backlog (5) drops the connections a loader opens at once (two workers, FILE_THREADS each),
    # and a dropped SYN is sent again after a second.
    socketserver.ThreadingTCPServer.request_queue_size = 256
    socketserver.ThreadingTCPServer(("127.0.0.1", port), LatencyProxy).serve_forever()


def start_proxy(port: int, upstream_port: int, latency_ms: float):
    proxy = multiprocessing.get_context("spawn").Process(
        target=serve_proxy, args=(port, ("127.0.0.1", upstream_port), latency_ms / 1e3, SERVER_CPUS), daemon=True)
    proxy.start()
    return proxy


def wait_for(port: int, timeout: float = 60.0) -> None:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "latentstore-bench-workers")
    ap.add_argument("--images", type=int, default=64, help="images; samples = images x 16 variants")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--latency", type=float, default=20.0, help="ms added per request by the proxy")
    ap.add_argument("--no-remote", action="store_true")
    ap.add_argument("--encoders", type=int, default=1,
                    help="encoder processes of the store's one build (the same bytes at any count)")
    ap.add_argument("--split-cpus", action="store_true",
                    help="servers and proxy on half of the CPUs, the loader on the other half (see above)")
    a = ap.parse_args(argv)
    global SERVER_CPUS
    if a.split_cpus:
        loader_cpus, SERVER_CPUS = split_cpus()
        print(f"--split-cpus: the loader on CPUs {sorted(loader_cpus)}, servers and proxy on {sorted(SERVER_CPUS)}")
    if a.images < 32:
        ap.error("--images must be at least 32: a variant must fill a batch of 32")
    portable_numerics()
    from latentstore.commands.copy import copy_store

    store = build_store(a.work, a.images, a.encoders)
    zstore = zarr_twin(store)
    probe = open_bench_store(store, shuffle=False)
    y = next(iter(probe))["y_hat"]
    probe.set_epoch(0, until=VARIANTS)
    batches = len(probe)
    print(f"store {store}: {batches * 32:,} samples per pass, y_hat {tuple(y.shape)} {y.dtype}; "
          f"load average {os.getloadavg()[0]:.2f}")
    rows = []
    for workers in (0, 2):
        rows += passes("store", lambda: open_bench_store(store), workers, a.passes)
        rows += passes("floor", lambda: Floor(batches, y.shape, y.dtype), workers, a.passes)
    rows += passes("zarr", lambda: open_bench_store(zstore), 2, a.passes)
    if not a.no_remote:
        # The servers and the proxies run in processes of their own: in this one they would hold the GIL
        # against the loader's main loop, which a real object store does not.
        port, proxy_port = free_port(), free_port()
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=on_server_cpus)
        proxy = start_proxy(proxy_port, port, a.latency)
        os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                          AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        wait_for(port), wait_for(proxy_port)
        import s3fs
        s3fs.S3FileSystem().mkdir("bench")
        endpoint = {"endpoint_url": f"http://127.0.0.1:{proxy_port}"}
        pids = {"S3 server": server.pid, "proxy": proxy.pid}
        for kind, local in (("remote", store), ("remote-zarr", zstore)):
            copy_store(str(local), f"s3://bench/{local.name}")
            rows += remote_rows(kind, local, f"s3://bench/{local.name}", endpoint,
                                s3fs.S3FileSystem(client_kwargs=endpoint), f"bench/{local.name}", pids, a.work,
                                a.passes)
        proxy.terminate()
        server.terminate()
        server.wait()
        if shutil.which("nginx"):  # a native server, where one is installed (apt-get install nginx-light)
            import fsspec
            port, proxy_port = free_port(), free_port()
            server = start_nginx(store.parent, port, a.work)
            proxy = start_proxy(proxy_port, port, a.latency)
            wait_for(port), wait_for(proxy_port)
            pids = {"nginx": server.pid, "proxy": proxy.pid}
            for kind, local in (("http", store), ("http-zarr", zstore)):
                url = f"http://127.0.0.1:{proxy_port}/{local.name}"
                rows += remote_rows(kind, local, url, {}, fsspec.filesystem("http"), url, pids, a.work, a.passes)
            proxy.terminate()
            server.terminate()
            server.wait()
    rates = {}
    for r in rows:
        rates.setdefault((r["name"], r["workers"]), []).append(r["rate"])
    best = {key: max(v) for key, v in rates.items()}
    median = {key: statistics.median(v) for key, v in rates.items()}
    print("\nsamples/s over passes:                 best    median")
    for key in rates:
        print(f"  {key[0]:18} {key[1]} workers:  {best[key]:8,.0f}  {median[key]:8,.0f}")

    def ratio(a_key, b_key):
        return f"{best[a_key] / best[b_key]:.0%} of best, {median[a_key] / median[b_key]:.0%} of median"
    print(f"store / floor, 2 workers: {ratio(('store', 2), ('floor', 2))} (target 70%)")
    local_of = {"remote": "store", "http": "store", "remote-zarr": "zarr", "http-zarr": "zarr"}
    for kind, local in local_of.items():
        if (kind, 2) not in best:
            continue
        print(f"{kind} ({a.latency:.0f} ms/request) / local {local}, 2 workers: {ratio((kind, 2), (local, 2))} "
              "(target 50%)" + ("" if local == "store" else f"; / the tar store: {ratio((kind, 2), ('store', 2))}"))
        print(f"  / {kind}-server (what the server and proxy deliver): {ratio((kind, 2), (f'{kind}-server', 2))}")
        # What the target asks of this machine: half the local rate in bytes, at the transport's measured CPU cost
        server_rows = [r for r in rows if r["name"] == f"{kind}-server"]
        cost = statistics.median(r["cpu_per_gb"] for r in server_rows)
        per_sample = server_rows[0]["bytes_per_sample"]
        wanted = 0.5 * median[(local, 2)] * per_sample / 1e9
        print(f"  {per_sample / 1e3:.0f} kB fetched per sample; 50% of local = {wanted:.2f} GB/s; the transport "
              f"alone (server + proxy + client) costs {cost:.2f} CPU s per GB here, so {wanted * cost:.1f} of this "
              f"machine's {os.cpu_count()} cores before the loader reads a sample")
    for name in ("store", "floor"):  # pass 0 starts the workers: later passes show a pass's own start-up
        firsts = [r["first_ms"] / r["steady_ms"] for r in rows if r["name"] == name and r["workers"] == 2][1:]
        if not firsts:  # --passes 1
            continue
        print(f"{name}, 2 workers, passes 1+: first batch {statistics.median(firsts):.1f}x a steady batch of "
              f"its pass (median; {min(firsts):.1f}-{max(firsts):.1f}x) (target 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
