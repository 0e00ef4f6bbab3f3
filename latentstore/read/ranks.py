"""Which rank of how many ranks this process is: the one answer the reader, the trainers and eval share."""
from __future__ import annotations

import os

import torch


def rank_and_world() -> tuple[int, int]:
    """(rank, world) of the initialized process group, else from RANK / WORLD_SIZE (torchrun, srun), else (0, 1).

    The environment answers before ``init_process_group`` and inside DataLoader workers, which do
    not see the group; the group answers once it exists.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
