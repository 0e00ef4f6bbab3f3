"""What the read check costs: the store loader's samples/s with no check, sha256, CRC-32C of
whole shards and the per-sample CRC-32C of the sample index, side by side.

    python benchmarks/ab_store_read.py STORE [--trials 15] [--workers 2] [--later]

The check runs the first time a process reads a file or sample (later epochs find it memoized),
so every measured epoch here starts with the memo cleared: each epoch is a "first epoch" as far
as the check goes. With --later the memos are kept (0 workers only): every epoch after the
warm-up is a later epoch, and measures what the check costs once it has run. One process runs them all, after one warm-up epoch, with the modes interleaved, so
the process's own speed (memory layout, clock, the machine's other load) is the same for all:
  none     the check skipped (the reader without integrity on read)
  sha256   each whole shard's sha256 (what stores without a crc32c get)
  crc32c   each whole shard's CRC-32C (stores without a sample index)
  index    each sample's CRC-32C from its shard's sample index (tar stores that have one: the default)
Each epoch is open_store(ŷ+label, shuffle, batch 32) over the whole split, read with --workers
DataLoader workers (forked: they inherit the mode). With k workers, the whole-shard modes check
every shard in every worker that reads one of its samples; the index mode checks each sample once.
A store built before crc32c was recorded gets one computed in memory for the crc32c mode.
"""
from __future__ import annotations

import argparse
import statistics
import time

from torch.utils.data import DataLoader

from latentstore.store import checksum
from latentstore import open_store
from latentstore.store.checksum import file_record
from latentstore.store.tar import reader as tar_reader

MODES = ("none", "sha256", "crc32c", "index")
CHECK = checksum.read_check


def epoch(store: str, mode: str, seed: int, workers: int, later: bool = False) -> float:
    """samples/s of one epoch read in `mode`, the per-process memos of checked files cleared first
    (unless `later`)."""
    if not later:
        checksum._CHECKED.clear()
        tar_reader._CHECKED_SAMPLES.clear()
    checksum.read_check = (lambda path, record: True) if mode == "none" else CHECK  # what check_once calls
    ds = open_store(store, fields=("y_hat", "label"), shuffle=True, batch_size=32)
    for shard in ds.info["shards"]:
        if mode != "index":
            shard.pop("index", None)  # the reader falls back to the whole shard's digest
        for f in shard.get("files", [shard]):
            if mode == "sha256":
                f.pop("crc32c", None)
            elif mode == "crc32c" and "crc32c" not in f:
                f.update(file_record(f"{store}/{f['path']}"))
    ds.set_epoch(seed)
    start = time.perf_counter()
    n = sum(len(batch["label"]) for batch in DataLoader(ds, batch_size=None, num_workers=workers))
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store")
    p.add_argument("--trials", type=int, default=15, help="epochs per mode")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--later", action="store_true", help="keep the memos: the cost in epochs after the first")
    a = p.parse_args()
    if a.later and a.workers:
        p.error("--later needs --workers 0: workers start afresh each epoch, with empty memos")
    modes = [m for m in MODES if m != "index" or "index" in open_store(a.store).info["shards"][0]]
    for mode in modes:  # warm-up: imports, first allocations, the page cache (and, with --later, the memos)
        epoch(a.store, mode, 0, a.workers)
    rates = {mode: [] for mode in modes}
    for t in range(a.trials):
        for mode in modes:
            rates[mode].append(epoch(a.store, mode, t, a.workers, a.later))
    base = statistics.median(rates["none"])
    print(f"store {a.store}: {a.trials} epochs per mode, interleaved, "
          f"{'memos kept (later epochs)' if a.later else 'each with the check memos cleared'}, {a.workers} workers")
    print(f"{'check':8} {'median samples/s':>17} {'vs none':>8} {'quartiles':>20}")
    for mode in modes:
        q = statistics.quantiles(rates[mode], n=4)
        med = statistics.median(rates[mode])
        print(f"{mode:8} {med:17,.0f} {med / base - 1:+8.1%} {q[0]:>9,.0f} - {q[2]:,.0f}")


if __name__ == "__main__":
    main()
