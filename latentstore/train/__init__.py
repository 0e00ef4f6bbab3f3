"""The library half of the trainers (train/classify.py, train/segment.py): config, DDP, loop, checkpoints,
knowledge transfer and logging. The scripts hold only what differs: the recipe's defaults and the loss."""
from .config import TrainConfig, opt, parse_config, run_script
from .ddp import Dist, cleanup, setup
from .loop import Position, fit
from .model import build_model, input_fields, model_inputs, probe_inputs, valid_crop
from .transfer import DISTANCES, transfer_loss
from .transfer import Transfer
from .student import Student, prepare_student

__all__ = ["TrainConfig", "opt", "parse_config", "run_script", "Dist", "setup", "cleanup", "fit", "Position",
           "build_model", "input_fields", "model_inputs", "probe_inputs", "valid_crop", "DISTANCES",
           "transfer_loss", "Transfer", "Student", "prepare_student"]
