"""The library half of the trainers (train/classify.py, train/segment.py): config, DDP, loop, checkpoints,
knowledge transfer and logging. The scripts hold only what differs: the recipe's defaults and the loss.

The config half (TrainConfig, opt, parse_config, run_script) imports no torch, so a trainer's
--help and its flag errors come at once; the rest loads on first use.
"""
from typing import TYPE_CHECKING

from .config import TrainConfig, opt, parse_config, run_script

#: name -> submodule that defines it, imported on first access (torch, timm)
_LAZY = {"Dist": "ddp", "setup": "ddp", "cleanup": "ddp", "fit": "loop", "Position": "loop",
         "build_model": "model", "input_fields": "model", "model_inputs": "model", "probe_inputs": "model",
         "valid_crop": "model", "DISTANCES": "transfer", "transfer_loss": "transfer", "Transfer": "transfer",
         "Student": "student", "prepare_student": "student"}

if TYPE_CHECKING:
    from .ddp import Dist, cleanup, setup
    from .loop import Position, fit
    from .model import build_model, input_fields, model_inputs, probe_inputs, valid_crop
    from .student import Student, prepare_student
    from .transfer import DISTANCES, Transfer, transfer_loss


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TrainConfig", "opt", "parse_config", "run_script", *_LAZY]
