"""Read samples as torch tensors, and batches of them: the last conversions before a sample leaves the reader."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info


def to_tensors(sample: dict, y_hat_dtype: torch.dtype | None = torch.float32) -> dict:
    """numpy fields -> tensors (ŷ in `y_hat_dtype`, None: as stored; integer symbols widened to int32)."""
    out = {}
    for name, value in sample.items():
        if isinstance(value, np.ndarray):
            t = torch.from_numpy(value)
            if name == "y_hat":
                t = t if y_hat_dtype is None else t.to(y_hat_dtype)
            elif not t.is_floating_point():
                t = t.to(torch.int32)
            out[name] = t
        elif name == "label":
            out[name] = torch.tensor(value, dtype=torch.int64)
        else:
            out[name] = value
    return out


def collate(samples: list[dict]) -> dict:
    """Stack tensors of equal shape; keep everything else (keys, meta dicts) as lists."""
    out = {}
    for name in samples[0]:
        values = [s[name] for s in samples]
        out[name] = stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


#: Below this many elements a batch is stacked by torch.stack (labels, scalars): no thread pool at that size.
_COPY_FROM = 1 << 16


def stack(values: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack of equal-shaped tensors, written sample by sample into one preallocated batch.

    torch.stack of a large float16 batch runs on torch's thread pool and costs ~15x a plain copy per
    sample when the cores are shared (a 0-worker loader in the trainer's process). In a DataLoader
    worker the batch is allocated in shared memory, as default_collate does, so handing it to the
    main process costs no second copy."""
    first = values[0]
    if first.numel() * len(values) < _COPY_FROM or any(v.shape != first.shape or v.dtype != first.dtype
                                                       for v in values):
        return default_collate(values)  # small, or unequal shapes: torch's own error names them
    shape = (len(values), *first.shape)
    if get_worker_info() is not None:
        storage = first._typed_storage()._new_shared(math.prod(shape), device=first.device)
        batch = first.new(storage).view(shape)
    else:
        batch = torch.empty(shape, dtype=first.dtype)
    for row, value in zip(batch, values):
        row.copy_(value)
    return batch
