"""How teacher features are stored: float16, bfloat16 (as uint16 bits) or int8 with a scale per channel.

docs/FORMAT.md "Teacher fields" is the spec; ``dequantize`` is its float32 column.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, StoreError
from .names import TEACHER_DTYPES


def quantize(x: np.ndarray, dtype: str) -> dict:
    """float32 [C,h,w] -> {"": stored array} (+ {".scale": float32 [C]} for int8)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "float16":
        return {"": x.astype(np.float16)}
    if dtype == "bfloat16":
        # torch rounds to nearest even; the uint16 bit pattern keeps the .npy readable by plain numpy.
        bits = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        return {"": bits.copy()}
    if dtype == "int8":
        scale = (np.abs(x).reshape(x.shape[0], -1).max(axis=1) / np.float32(127)).astype(np.float32)
        safe = np.where(scale > 0, scale, np.float32(1)).reshape(-1, *([1] * (x.ndim - 1)))
        q = np.clip(np.rint(x / safe), -127, 127).astype(np.int8)
        return {"": q, ".scale": scale}
    raise ConfigError(f"Invalid --teacher-dtype {dtype!r}: choose {', '.join(TEACHER_DTYPES)}")


def dequantize(stored: np.ndarray, dtype: str, scale: np.ndarray | None = None) -> np.ndarray:
    """The float32 features a stored array stands for (inverse of `quantize`, up to its rounding)."""
    if dtype == "float16":
        return stored.astype(np.float32)
    if dtype == "bfloat16":
        return (stored.astype(np.uint32) << 16).view(np.float32)
    if dtype == "int8":
        if scale is None:
            raise StoreError("int8 teacher features need their .scale member")
        return stored.astype(np.float32) * scale.astype(np.float32).reshape(-1, *([1] * (stored.ndim - 1)))
    raise StoreError(f"unknown teacher dtype {dtype!r} in the manifest")


def relative_error(x: np.ndarray, dtype: str) -> float:
    """‖dequantize(quantize(x)) − x‖₂ / ‖x‖₂: what storing `x` in `dtype` costs."""
    q = quantize(x, dtype)
    err = dequantize(q[""], dtype, q.get(".scale")) - x
    norm = float(np.linalg.norm(x))
    return float(np.linalg.norm(err)) / norm if norm else 0.0
