"""What the .npy decoder costs the loader: numpy's np.load against format.decode_npy, side by side.

    python benchmarks/ab_npy_decode.py STORE [--trials 15]

np.load parses every .npy header with ast.literal_eval; format.decode_npy reads the headers np.save
writes for plain C-order arrays with one regular expression and hands anything else to np.load.
One process, modes interleaved after a warm-up, so the machine's load is the same for both:
  decode   µs per member to decode every .npy member of the store's first shard (y_hat, symbols, ...)
  loader   samples/s of an epoch of open_store(ŷ+label, shuffle, batch 32, 0 workers)
"""
from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np

from latentstore.store import format as store_format
from latentstore import open_store
from latentstore.store.tar.reader import iter_raw

FAST = store_format.decode_npy
DECODERS = {"np.load": lambda data: np.load(io.BytesIO(data), allow_pickle=False),
            "decode_npy": FAST}


def npy_members(store: str) -> list[bytes]:
    shard = open_store(store).info["shards"][0]["path"]
    return [data for _, members in iter_raw(Path(store) / shard, shard)
            for ext, data in members.items() if ext.endswith(".npy")]


def decode_us(members: list[bytes], decoder) -> float:
    start = time.perf_counter()
    for data in members:
        decoder(data)
    return 1e6 * (time.perf_counter() - start) / len(members)


def loader_rate(store: str, decoder, seed: int) -> float:
    store_format.decode_npy = decoder  # what format.decode_field calls
    try:
        ds = open_store(store, fields=("y_hat", "label"), shuffle=True, batch_size=32)
        ds.set_epoch(seed)
        start = time.perf_counter()
        n = sum(len(batch["label"]) for batch in ds)
        return n / (time.perf_counter() - start)
    finally:
        store_format.decode_npy = FAST


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store")
    p.add_argument("--trials", type=int, default=15)
    a = p.parse_args()
    members = npy_members(a.store)
    for name, decoder in DECODERS.items():  # warm-up
        decode_us(members, decoder), loader_rate(a.store, decoder, 0)
    us = {name: [] for name in DECODERS}
    rate = {name: [] for name in DECODERS}
    for t in range(a.trials):
        for name, decoder in DECODERS.items():
            us[name].append(decode_us(members, decoder))
            rate[name].append(loader_rate(a.store, decoder, t))
    print(f"store {a.store}: {len(members)} .npy members of its first shard; {a.trials} trials, interleaved")
    print(f"{'decoder':12} {'µs per member':>14} {'loader samples/s':>17}")
    for name in DECODERS:
        print(f"{name:12} {statistics.median(us[name]):14.1f} {statistics.median(rate[name]):17,.0f}")


if __name__ == "__main__":
    main()
