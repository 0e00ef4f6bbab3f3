"""A read-only view of a trainer checkpoint: what evaluation needs from it, and nothing else.

The trainers (``latentstore.train``) own the checkpoint format; this module
only reads it, through ``latentstore.train.checkpoint.load`` (torch.load with
``weights_only=True``), and picks out:

- the model's state dict: ``model``;
- the resolved training config: ``config`` (model name under ``model``, the
  transfer loss under ``transfer``);
- the summary of the training store, ``store`` (``latentstore.train.store_identity.store_summary``,
  what ``check_compatible`` compares);
- ``task``, ``step`` and ``epoch``.

A checkpoint without one of the first three is an error naming it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import WeightsError
from ..store.format import file_sha256


@dataclass(frozen=True)
class CheckpointView:
    path: str
    model_name: str
    num_classes: int
    state_dict: dict = field(repr=False)
    config: dict = field(repr=False)
    trained_on: dict                  # store_summary of the training store
    transfer: str | None = None
    task: str | None = None
    step: int | None = None
    epoch: int | None = None
    sha256: str = ""


def _load_raw(path: Path) -> dict:
    from ..train.checkpoint import load  # the trainers' reader: weights_only=True, named errors

    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    raw = load(path)
    if not isinstance(raw, dict):
        raise WeightsError(f"checkpoint {path} holds a {type(raw).__name__}, not a latentstore checkpoint dict")
    return raw


def _required(raw: dict, key: str, kind: type, path: Path):
    value = raw.get(key)
    if not isinstance(value, kind) or not value:
        raise WeightsError(f"checkpoint {path} holds no {key!r} ({kind.__name__}): not a checkpoint of "
                           "train/classify.py or train/segment.py")
    return value


def read_checkpoint(path) -> CheckpointView:
    """Load a trainer checkpoint (weights only) and pick out what evaluation needs."""
    path = Path(path)
    raw = _load_raw(path)
    state, config, trained_on = (_required(raw, key, dict, path) for key in ("model", "config", "store"))
    name = config.get("model")
    if not isinstance(name, str):
        raise WeightsError(f"checkpoint {path} does not name its model (config['model']); cannot rebuild it")
    num_classes = trained_on.get("num_classes")
    if num_classes is None:
        raise WeightsError(f"checkpoint {path} does not record its training store's classes (store['num_classes'])")
    transfer = config.get("transfer")
    return CheckpointView(str(path), name, int(num_classes), state, config, trained_on,
                          transfer=None if transfer in (None, "none") else str(transfer), task=raw.get("task"),
                          step=raw.get("step"), epoch=raw.get("epoch"), sha256=file_sha256(path))
