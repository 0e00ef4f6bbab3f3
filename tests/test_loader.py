"""Two real processes (gloo, CPU) read a prime-sized store and all_reduce every step: no rank hangs."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from latentstore import open_store

from conftest import tiny_store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, store, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ds = open_store(store, shuffle=True, batch_size=2, seed=7)  # rank and world from torch.distributed
        keys, steps = [], 0
        for epoch in range(2):
            ds.set_epoch(epoch)
            for batch in DataLoader(ds, batch_size=None, num_workers=1):
                total = torch.tensor([float(len(batch["__key__"]))])
                dist.all_reduce(total)        # hangs if one rank has a batch the other lacks
                keys += batch["__key__"]
                steps += 1
        with open(f"{out}/rank{rank}.txt", "w") as f:
            f.write(f"{steps}\n" + "\n".join(keys))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def store5(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("five")
    tiny_store(tiny_folder, out, variants=2, shard_size=2, limit=5)
    return out


@pytest.mark.slow
def test_two_gloo_ranks_all_reduce_every_step_on_a_prime_store(store5, tmp_path):
    assert len(open_store(store5)) == 5
    mp.spawn(_worker, args=(2, free_port(), str(store5), str(tmp_path)), nprocs=2, join=True)
    results = [(tmp_path / f"rank{r}.txt").read_text().split("\n") for r in range(2)]
    steps = [int(r[0]) for r in results]
    keys = [r[1:] for r in results]
    assert steps == [2, 2]                                 # 5 // 2 = 2 samples per rank: one batch per epoch
    assert len(keys[0]) == len(keys[1]) == 4 and not set(keys[0]) & set(keys[1])


def test_collate_stacks_as_torch_does_into_one_preallocated_batch():
    from latentstore.read.dataset import collate
    g = torch.Generator().manual_seed(0)
    samples = [{"y_hat": torch.randn(192, 16, 16, generator=g).half(), "label": torch.tensor(i), "__key__": f"k{i}"}
               for i in range(32)]
    batch = collate(samples)
    assert torch.equal(batch["y_hat"], torch.stack([s["y_hat"] for s in samples]))
    assert batch["y_hat"].dtype == torch.float16 and torch.equal(batch["label"], torch.arange(32))
    assert batch["__key__"] == [f"k{i}" for i in range(32)]
    with pytest.raises(RuntimeError):  # unequal shapes: torch's own error
        collate([{"y_hat": torch.zeros(192, 16, 16)}, {"y_hat": torch.zeros(192, 16, 15)}])
