"""A/B of the store loader alone: samples/s of open_store(ŷ+label, shuffle, batch 32, 0 workers), best of N passes in one process.

    PYTHONPATH=<checkout> python benchmarks/ab_store_read.py STORE PASSES

Run it alternately with two checkouts on one store (e.g. the bench_loader store) to compare them.
"""
import sys, time
from latentstore.store import open_store
store, passes = sys.argv[1], int(sys.argv[2])
best = 0
for i in range(passes):
    ds = open_store(store, fields=("y_hat", "label"), shuffle=True, batch_size=32)
    ds.set_epoch(i)
    t = time.perf_counter(); n = sum(len(b["label"]) for b in ds); dt = time.perf_counter() - t
    best = max(best, n / dt)
print(f"{best:.0f}")
