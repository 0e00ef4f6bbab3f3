"""A read-only view of a trainer checkpoint: what evaluation needs from it, and nothing else.

The trainers (``latentstore.train``) own the checkpoint format; this module
only reads it, through ``latentstore.train.checkpoint.load`` (torch.load with
``weights_only=True``), and picks out:

- the model's state dict: ``model`` (or ``state_dict``), ``module.`` prefixes dropped;
- the resolved training config: ``config`` (model name under ``model``, the
  transfer loss under ``transfer``);
- the summary of the training store, ``store`` (``latentstore.train.store_identity.store_summary``,
  what ``check_compatible`` compares); a whole manifest there is summarized the same way;
- ``step`` and ``epoch``.

A field that cannot be found is an error naming it, except the store summary
fields, which ``check_compatible`` skips when absent (it says so in the record).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import WeightsError
from ..store.format import file_sha256
from ..train.store_identity import saved_summary, store_summary


@dataclass(frozen=True)
class CheckpointView:
    path: str
    model_name: str
    num_classes: int
    state_dict: dict = field(repr=False)
    config: dict = field(repr=False)
    trained_on: dict                  # store_summary-style dict of the training store (may be partial)
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


def _first(d: dict, *names):
    for n in names:
        if isinstance(d, dict) and d.get(n) is not None:
            return d[n]
    return None


def _trained_on(store, config: dict) -> dict:
    """The training store's summary: saved as such by the trainers, or computed from a saved manifest."""
    if not isinstance(store, dict):
        return {}
    if isinstance(store.get("splits"), dict):
        split = config.get("split", "train")
        return store_summary(store, split if split in store["splits"] else next(iter(store["splits"])))
    return saved_summary(store)


def read_checkpoint(path) -> CheckpointView:
    """Load a trainer checkpoint (weights only) and pick out what evaluation needs."""
    path = Path(path)
    raw = _load_raw(path)
    config = raw.get("config") or {}
    if not isinstance(config, dict):  # a dataclass saved as such would not load with weights_only
        config = dict(config)
    state = _first(raw, "model", "state_dict", "model_state")
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"checkpoint {path} holds no model state dict (looked for 'model', 'state_dict')")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    name = _first(config, "model", "model_name") or _first(raw, "model_name")
    if not isinstance(name, str):
        raise WeightsError(f"checkpoint {path} does not name its model (config['model']); cannot rebuild it")
    trained_on = _trained_on(_first(raw, "store", "manifest"), config)
    num_classes = _first(config, "num_classes")
    if num_classes is None:
        num_classes = trained_on.get("num_classes")
    if num_classes is None:
        raise WeightsError(f"checkpoint {path} records neither num_classes nor the training store's classes")
    transfer = _first(config, "transfer")
    return CheckpointView(str(path), name, int(num_classes), state, config, trained_on,
                          transfer=None if transfer in (None, "none") else str(transfer),
                          task=_first(config, "task") or _first(raw, "task"),
                          step=_first(raw, "step"), epoch=_first(raw, "epoch"), sha256=file_sha256(path))
