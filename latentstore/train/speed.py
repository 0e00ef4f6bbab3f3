"""How a trainer or an eval keeps the GPU busy: precision, memory layout, compile, data loading.

Each piece is a small function so a trainer reads as "what", and so its logic
is testable on the CPU (the device type is an argument, not a probe):

* ``--precision auto`` (default) means bf16 autocast with channels_last weights
  on CUDA (tensor cores take NHWC bf16; docs/benchmarks.md "GPU node" has the
  step rates) and plain fp32 on the CPU, where autocast brings nothing and the
  exact-resume tests run. ``--precision fp32`` opts out.
* ``--compile`` wraps the model in ``torch.compile`` (first steps compile).
* One DataLoader for the whole run, read in one pass through all epochs
  (strict reads; latentstore.read.dataset, 6), so its workers read on into the
  next epoch while this one ends. Lenient reads take a pass per epoch, and
  the workers persist across them (the dataset's epoch and start are shared
  with them). Batches come in pinned memory, so the host-to-GPU copy is
  non-blocking, and carry ŷ as stored (float16: half the bytes of float32).
* ``StepMeter`` sums the logged values on the device; the host reads them
  (one sync) only at log steps.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp32")


def autocast_dtype(precision: str, device_type: str) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device_type`; None: run in fp32 without autocast."""
    if precision not in PRECISIONS:
        raise ConfigError(f"Invalid --precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if precision == "fp32" or (precision == "auto" and device_type != "cuda"):
        return None
    return torch.bfloat16


def uses_channels_last(precision: str, device_type: str) -> bool:
    """channels_last weights go with bf16 on CUDA (NHWC tensor-core kernels); elsewhere NCHW as before."""
    return device_type == "cuda" and autocast_dtype(precision, device_type) is not None


def autocast(device_type: str, dtype: torch.dtype | None):
    """The forward pass's autocast context (a no-op context for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def prepare_model(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """Move `model` to `device`, channels_last where the precision calls for it (in place; returns it)."""
    model.to(device)
    if device.type == "cuda":
        # Batch and latent shapes are fixed for a run: let cuDNN time its kernels once.
        torch.backends.cudnn.benchmark = True
    if uses_channels_last(precision, device.type):
        model.to(memory_format=torch.channels_last)
    return model


def maybe_compile(net: nn.Module, compile: bool) -> nn.Module:
    """torch.compile(net) when asked; the returned module shares net's parameters."""
    return torch.compile(net) if compile else net


def make_loader(data, workers: int, device: torch.device, persistent: bool = True) -> DataLoader:
    """The run's DataLoader over a batching dataset: one for all epochs (set_epoch reaches its
    persistent workers where a run takes a pass per epoch), pinned batches on CUDA."""
    return DataLoader(data, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=persistent and workers > 0,
                      prefetch_factor=4 if workers > 0 else None)


class StepMeter:
    """Sums of per-step values kept as tensors where they are: adding one is no host sync."""

    def __init__(self):
        self.sums: dict = {}
        self.steps = 0

    def add(self, values: dict) -> None:
        for k, v in values.items():
            v = v.detach() if isinstance(v, torch.Tensor) else v
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.steps += 1

    def means(self) -> dict:
        """Means over the steps since the last reset, as floats (one host sync for all tensors)."""
        n = max(self.steps, 1)
        names = [k for k, v in self.sums.items() if isinstance(v, torch.Tensor)]
        values = torch.stack([self.sums[k].float().reshape(()) for k in names]).tolist() if names else []
        out = {k: float(v) / n for k, v in self.sums.items() if k not in names}
        out.update({k: v / n for k, v in zip(names, values)})
        return out

    def reset(self) -> None:
        self.sums, self.steps = {}, 0
