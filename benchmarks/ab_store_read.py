"""What the read check costs: the store loader's samples/s with no check, sha256 and CRC-32C, side by side.

    python benchmarks/ab_store_read.py STORE [--rounds 6] [--epochs 3]

Each round starts one fresh process per mode, interleaved (the machine's load drifts), and each
process reads `--epochs` epochs of open_store(ŷ+label, shuffle, batch 32, 0 workers). The first
epoch of a process is the one that checks each file (later ones find it memoized), so the
table shows the median first-epoch rate and the median best-of-epochs rate per mode. Modes:
  none     the check skipped (the reader before integrity on read)
  sha256   the record's sha256 (what stores without a crc32c get)
  crc32c   the record's CRC-32C (what stores that record one get; the default)
A tar store built before crc32c was recorded gets one computed in memory for the crc32c mode.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

MODES = ("none", "sha256", "crc32c")


def one_process(store: str, mode: str, epochs: int) -> list[float]:
    import latentstore.readers.webdataset as tar_reader
    from latentstore import open_store
    from latentstore.checksum import file_record
    rates = []
    for epoch in range(epochs):
        ds = open_store(store, fields=("y_hat", "label"), shuffle=True, batch_size=32)
        for shard in ds.info["shards"]:
            if mode == "sha256":
                shard.pop("crc32c", None)
            elif mode == "crc32c" and "crc32c" not in shard:
                shard.update(file_record(f"{store}/{shard['path']}"))
        if mode == "none":
            tar_reader.read_check = lambda path, record: True
        ds.set_epoch(epoch)
        start = time.perf_counter()
        n = sum(len(batch["label"]) for batch in ds)
        rates.append(n / (time.perf_counter() - start))
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # a child process
    a = p.parse_args()
    if a.one:
        print(json.dumps(one_process(a.store, a.one, a.epochs)))
        return
    runs = {mode: [] for mode in MODES}
    for r in range(a.rounds):
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, a.store, "--one", mode, "--epochs", str(a.epochs)],
                                 check=True, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(out.strip().splitlines()[-1]))
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    base = statistics.median(rates[0] for rates in runs["none"])
    print(f"store {a.store}, {a.rounds} fresh processes per mode, median samples/s")
    print(f"{'check':8} {'first epoch':>12} {'vs none':>8} {'best epoch':>11}")
    for mode in MODES:
        first = statistics.median(rates[0] for rates in runs[mode])
        best = statistics.median(max(rates) for rates in runs[mode])
        print(f"{mode:8} {first:12,.0f} {first / base - 1:+8.0%} {best:11,.0f}")


if __name__ == "__main__":
    main()
