"""DDP from the environment (torchrun / srun set RANK, WORLD_SIZE, LOCAL_RANK): nccl on GPU, gloo on CPU.

Without those variables it is one process on one device. Only rank 0 writes
files and draws a progress bar (``Dist.main``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError
from ..read.ranks import rank_and_world


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device: str = "auto") -> Dist:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    rank, world = rank_and_world()
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"Invalid --device {device!r}: choose auto, cpu or cuda")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda, but torch sees no GPU: use --device cpu")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Dist(rank, world, local, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_true(flag: bool, d: Dist) -> bool:
    """True on every rank only if `flag` is true on every rank (so all ranks stop at the same step)."""
    if not d.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def mean_over_ranks(values: dict, d: Dist) -> dict:
    """Average a dict of float scalars over ranks (one all_reduce)."""
    if not d.distributed or not values:
        return values
    names = sorted(values)
    t = torch.tensor([float(values[n]) for n in names], device=d.device, dtype=torch.float64)
    dist.all_reduce(t)
    return {n: v / d.world for n, v in zip(names, t.tolist())}


def barrier(d: Dist) -> None:
    if d.distributed:
        dist.barrier()
