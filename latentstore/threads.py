"""The torch thread count of everything a store holds.

Kept apart from encode.py so that readers and trainers that run the teacher at
the store's count do not import the codec.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

#: Intra-op threads for every computation whose result is stored. Convolutions differ in
#: the last bits between thread counts (docs/benchmarks.md, "Throughput knobs"), so without
#: a fixed count a store made on a 64-core node would not equal one made on a laptop. One
#: thread is also the fastest for the serial loop's tiny ops; parallelism comes from
#: --encoders processes and --part.
STORE_THREADS = 1


@contextmanager
def store_threads(threads: int = STORE_THREADS):
    """Run the enclosed torch work at `threads` intra-op threads (a store's count), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
