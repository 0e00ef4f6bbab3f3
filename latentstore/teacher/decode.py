"""Reader side of the teacher fields: a sample's stored members -> float tensors (docs/FORMAT.md "Teacher fields")."""
from __future__ import annotations

import torch

from ..errors import StoreError
from .dtypes import dequantize


class TeacherDecoder:
    """Turns a sample's stored teacher members into float tensors (dequantized).

    ``out_dtype=None`` hands float16 and bfloat16 maps out in their stored dtype (the values
    exactly, in half the bytes of float32: what a loader should carry to the GPU) and int8
    maps dequantized to float32.
    """

    def __init__(self, split_entry: dict, fields=(), out_dtype: torch.dtype | None = torch.float32):
        fp = split_entry.get("teacher") or {}
        self.dtype = fp.get("dtype")
        self.fields = frozenset(t["field"] for t in fp.get("taps", ()))  # what the store holds
        self.requested = tuple(f for f in fields if f in self.fields)
        self.out_dtype = out_dtype

    def read_fields(self, fields: tuple) -> tuple:
        """The members to read for `fields`: int8 fields bring their .scale."""
        return tuple(fields) + tuple(f + ".scale" for f in self.requested if self.dtype == "int8")

    def decode(self, sample: dict) -> dict:
        for name in self.requested:
            if name not in sample:
                raise StoreError(f"shard {sample.get('__shard__')}, key {sample.get('__key__')}: "
                                 f"missing teacher field {name}")
            scale = sample.pop(name + ".scale", None)
            if self.dtype == "int8" and scale is None:
                raise StoreError(f"shard {sample.get('__shard__')}, key {sample.get('__key__')}: "
                                 f"{name} has no {name}.scale member")
            sample[name] = self._tensor(sample[name], scale)
        return sample

    def _tensor(self, stored, scale) -> torch.Tensor:
        if self.out_dtype is None and self.dtype == "float16":
            return torch.from_numpy(stored)
        if self.out_dtype is None and self.dtype == "bfloat16":
            return torch.from_numpy(stored.view("int16")).view(torch.bfloat16)  # the stored bits
        return torch.from_numpy(dequantize(stored, self.dtype, scale)).to(self.out_dtype or torch.float32)
