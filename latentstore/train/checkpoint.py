"""Checkpoints: written atomically on rank 0, read with torch.load(weights_only=True).

A checkpoint holds tensors and primitive containers only (no pickled
classes): model, optimizer and scheduler state dicts, the resolved config, a
summary of the store it trained on (``latentstore.train.store_identity.store_summary``), and
where training stands (global step, epoch, per-rank sample offset inside that
epoch, world size, per-rank batch).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ConfigError, StoreError
from ..store.format import fsync_dir

LAST = "last.pt"


def save(path, state: dict) -> None:
    """torch.save to a temporary name, fsync, rename: a crash leaves the old checkpoint or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def load(path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"Checkpoint {path} does not load with weights_only=True ({exc}): "
                          "not a latentstore checkpoint, or damaged") from exc


def find_resume(resume: str, out) -> Path | None:
    """The checkpoint to resume from: --resume auto|never|PATH."""
    if resume == "never":
        return None
    if resume == "auto":
        last = Path(out) / LAST
        return last if last.is_file() else None
    if not Path(resume).is_file():
        raise ConfigError(f"--resume {resume}: no such file (use auto, never or a checkpoint path)")
    return Path(resume)


def check_same_store(saved: dict, current: dict, path) -> None:
    """Refuse to resume on another store: `current` (``latentstore.train.store_identity.store_summary``) must equal
    the summary the checkpoint saved, key by key."""
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, store {v!r}" for k, v in current.items() if saved.get(k) != v]
    if diffs:
        raise StoreError(f"Checkpoint {path} was trained on another store:\n  " + "\n  ".join(diffs)
                         + "\nPoint --store at the original store, or start a new --out.")
