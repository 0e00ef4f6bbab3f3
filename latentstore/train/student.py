"""What both trainers read from the store before training: the student model, its input
fields, knowledge transfer (which refuses a mismatched teacher) and the valid latent region."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..format import read_manifest
from ..store import pick_split
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


def prepare_student(cfg, task: str) -> Student:
    """The student for `cfg` (a TrainConfig) on its store's split; task: classification or segmentation."""
    manifest = read_manifest(cfg.store)
    info = manifest["splits"][pick_split(manifest, cfg.split, cfg.store)]
    model = build_model(cfg, manifest, task=task)
    inputs = input_fields(cfg.model)
    return Student(model, inputs, Transfer.prepare(cfg, model, manifest, inputs), valid_crop(info))
