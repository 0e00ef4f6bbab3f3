"""What both trainers read from the store before training: the student model, its input
fields, knowledge transfer (which refuses a mismatched teacher) and the valid latent region."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from ..read.dataset import pick_split
from ..store.format import read_manifest
from ..store.keys import stored_fields
from .model import build_model, input_fields, model_inputs, valid_crop
from .transfer import Transfer


@dataclass
class Student:
    model: nn.Module
    inputs: tuple        # stored fields the model reads (y_hat, or y_hat and scales)
    transfer: Transfer
    region: object       # valid_crop(): the latent rows/cols an unpadded crop covers

    def batch_inputs(self, batch: dict, device) -> list:
        """The model's positional inputs from a collated batch, cropped to the valid region."""
        return model_inputs(batch, self.inputs, self.region, device)


TRAINERS = {"classification": "train/classify.py", "segmentation": "train/segment.py"}


def store_task(info: dict) -> str | None:
    """What a split's labels train: segmentation when its samples hold label maps, else
    classification; None for a split without samples."""
    held = stored_fields(info)
    return None if held is None else "segmentation" if "label_map" in held else "classification"


def check_task(info: dict, task: str, store, split: str) -> None:
    """Refuse a store whose labels are for the other trainer (before any run folder is made)."""
    found = store_task(info)
    if found is not None and found != task:
        what = "label maps (label_map)" if found == "segmentation" else "class labels and no label maps"
        raise ConfigError(f"Split {split!r} of {store} is a {found} store (its samples hold {what}): "
                          f"train it with {TRAINERS[found]}, not {TRAINERS[task]}")


def prepare_student(cfg, task: str) -> Student:
    """The student for `cfg` (a TrainConfig) on its store's split; task: classification or segmentation."""
    manifest = read_manifest(cfg.store)
    split = pick_split(manifest, cfg.split, cfg.store)
    info = manifest["splits"][split]
    check_task(info, task, cfg.store, split)
    model = build_model(cfg, manifest, task=task)
    inputs = input_fields(cfg.model)
    return Student(model, inputs, Transfer.prepare(cfg, model, manifest, inputs), valid_crop(info))
