"""A read-only view of a trainer checkpoint: what evaluation needs from it, and nothing else.

The trainers (``latentstore.train``) own the checkpoint format; this module
only reads it, through ``latentstore.train.checkpoint.load`` (torch.load with
``weights_only=True``), and picks out:

- the model's state dict: ``model`` (or ``state_dict``), ``module.`` prefixes dropped;
- the resolved training config: ``config`` (model name under ``model``, the
  transfer loss under ``transfer``);
- the summary of the training store, ``store``
  (``latentstore.train.checkpoint.store_summary``: coder, quality,
  coder_sha256, latent_shape, classes as a count, ...), normalized to the keys
  ``latentstore.evaluate.check_compatible`` compares; a manifest-like dict
  (a ``coder`` entry) is understood too;
- ``step`` and ``epoch``.

A field that cannot be found is an error naming it, except the store summary
fields, which ``check_compatible`` skips when absent (it says so in the record).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import WeightsError
from .format import file_sha256


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
    from .train.checkpoint import load  # the trainers' reader: weights_only=True, named errors

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


def _summary(store: dict | None, config: dict) -> dict:
    """Normalize whatever the checkpoint recorded about its training store to store_summary's keys."""
    if not isinstance(store, dict):
        return {}
    coder = store.get("coder")
    out = {}
    if isinstance(coder, dict):  # a manifest-like entry
        out.update(coder=coder.get("name"), quality=coder.get("quality"), latent_kind=coder.get("latent_kind"),
                   channels=coder.get("channels"), weights_sha256=(coder.get("weights") or {}).get("sha256"))
    else:  # the trainers' store_summary
        for k in ("coder", "quality", "latent_kind", "channels"):
            out[k] = store.get(k)
        out["weights_sha256"] = store.get("coder_sha256", store.get("weights_sha256"))
    split_info = store
    if isinstance(store.get("splits"), dict):
        split = config.get("split", "train")
        split_info = store["splits"].get(split) or next(iter(store["splits"].values()), {})
    out["latent_shape"] = split_info.get("latent_shape")
    classes = split_info.get("classes")
    if isinstance(classes, int):  # the trainers record the count only
        out["num_classes"] = classes
    elif classes:
        out["classes"], out["num_classes"] = list(classes), len(classes)
    return {k: v for k, v in out.items() if v is not None}


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
    trained_on = _summary(_first(raw, "store", "manifest") or _first(config, "store_manifest"), config)
    num_classes = _first(config, "num_classes")
    if num_classes is None:
        num_classes = trained_on.get("num_classes")
    if num_classes is None:
        raise WeightsError(f"checkpoint {path} records neither num_classes nor the training store's classes")
    transfer = _first(config, "transfer")
    return CheckpointView(str(path), name, int(num_classes), state, config, trained_on,
                          transfer=None if transfer in (None, "none") else str(transfer),
                          task=_first(config, "task"),
                          step=_first(raw, "step"), epoch=_first(raw, "epoch"), sha256=file_sha256(path))
