"""`latentstore copy` with one file at a time against JOBS at a time, side by side in one run (issue 27).

    python benchmarks/bench_copy.py --work /tmp/bench-copy              # 1,024 samples (64 images x 16 variants)

The bench_workers store (bmshj2018-hyperprior q1, untrained weights, 224 crops), built once into ``--work``.
Rows, each a fresh destination:
  publish   the local store to moto's S3 server on 127.0.0.1 (no added latency: what the copy itself costs)
  download  the published store through the latency proxy (``--latency`` ms per request) to a local folder:
            object storage's round trips, which copying several files at a time overlaps
Printed: seconds, files/s and MB/s per row and jobs, and the speed-up of JOBS over 1.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_workers as bench  # noqa: E402  the store, moto, the proxy


def timed_copy(src: str, dst: str, jobs: int, **options) -> tuple[float, dict]:
    from latentstore.commands.copy import copy_store
    began = time.perf_counter()
    done = copy_store(src, dst, jobs=jobs, **options)
    return time.perf_counter() - began, done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "latentstore-bench-copy")
    ap.add_argument("--images", type=int, default=64, help="images; samples = images x 16 variants")
    ap.add_argument("--latency", type=float, default=20.0, help="ms added per request by the proxy")
    a = ap.parse_args(argv)
    bench.portable_numerics()
    from latentstore.commands.copy import JOBS

    store = bench.build_store(a.work, a.images)
    port, proxy_port = bench.free_port(), bench.free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = bench.start_proxy(proxy_port, port, a.latency)
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    rows = []
    try:
        bench.wait_for(port), bench.wait_for(proxy_port)
        import s3fs
        s3fs.S3FileSystem().mkdir("bench")
        slow = {"endpoint_url": f"http://127.0.0.1:{proxy_port}"}
        for jobs in (1, JOBS):
            seconds, done = timed_copy(str(store), f"s3://bench/publish-{jobs}", jobs)
            rows.append(("publish", jobs, seconds, done))
            local = a.work / f"download-{jobs}"
            shutil.rmtree(local, ignore_errors=True)
            seconds, done = timed_copy(f"s3://bench/publish-{jobs}", str(local), jobs, src_options=slow)
            rows.append((f"download, {a.latency:.0f} ms", jobs, seconds, done))
            shutil.rmtree(local, ignore_errors=True)
    finally:
        proxy.terminate()
        server.terminate()
        server.wait()
    print(f"\nstore {store}: {rows[0][3]['copied']} files, {rows[0][3]['bytes'] / 1e6:,.0f} MB")
    print(f"{'row':20} {'jobs':>4} {'seconds':>8} {'files/s':>8} {'MB/s':>7}")
    for name, jobs, seconds, done in rows:
        print(f"{name:20} {jobs:4} {seconds:8.1f} {done['copied'] / seconds:8.1f} {done['bytes'] / seconds / 1e6:7.1f}")
    for name in dict.fromkeys(r[0] for r in rows):
        one, many = (r[2] for r in rows if r[0] == name)
        print(f"{name}: {JOBS} jobs take {many / one:.0%} of 1 job's time ({one / many:.1f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
