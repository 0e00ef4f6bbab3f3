"""The torch compute settings of everything a store holds: the thread count, and full float32 on CUDA.

Kept apart from the encoder so that the teacher, which runs at the store's settings, does not
import the codec.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

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


def no_tf32(device: torch.device):
    """Full float32 convolutions and matmuls on CUDA for the enclosed work (TF32 off), then restore."""
    if device.type != "cuda":
        return nullcontext()

    @contextmanager
    def scope():
        conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm
    return scope()
