"""The teacher on the GPU for `build --device cuda`: one forward per batch of same-size crops.

On the CPU the teacher runs one crop per forward at the store's thread count
(build/crops_to_samples.py): that keeps its stored maps independent of batch size and machine.
A cuda store is not byte-identical to a CPU build anyway (build/encoder.py), so here the
maps of a whole encoder batch come from one float32 forward (TF32 off), then are
stored exactly as on the CPU (same fields, dtypes and quantization).
"""
from __future__ import annotations

import numpy as np
import torch

from ..store.threads import no_tf32
from .dtypes import quantize
from .load import Teacher


class BatchedTeacher:
    """`teacher` moved to `device` (its model is moved in place: pass a copy of its own)."""

    def __init__(self, teacher: Teacher, device):
        self.teacher = teacher
        self.device = torch.device(device)
        teacher.model.to(self.device).eval()
        self.mean = torch.tensor(teacher.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(teacher.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def batch_fields(self, crops: list) -> list[dict]:
        """The teacher's fields ({field name: stored array}) for each uint8 HxWx3 crop, all of one size."""
        x = torch.from_numpy(np.stack(crops)).to(self.device).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
        with no_tf32(self.device):
            maps = [m.float().cpu() for m in self.teacher._run((x - self.mean) / self.std)]
        return [{f"{tap.field}{suffix}": array for tap, m in zip(self.teacher.taps, maps)
                 for suffix, array in quantize(m[i].numpy(), self.teacher.dtype).items()}
                for i in range(len(crops))]
