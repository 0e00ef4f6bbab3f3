"""Reader side of the teacher fields: a sample's stored members -> float tensors (docs/FORMAT.md "Teacher fields")."""
from __future__ import annotations

import torch

from ..errors import StoreError
from .dtypes import dequantize


class TeacherDecoder:
    """Turns a sample's stored teacher members into float tensors (dequantized)."""

    def __init__(self, split_entry: dict, fields=(), out_dtype: torch.dtype = torch.float32):
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
            sample[name] = torch.from_numpy(dequantize(sample[name], self.dtype, scale)).to(self.out_dtype)
        return sample
