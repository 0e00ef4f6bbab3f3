"""The eval scripts' flags -> a frozen EvalConfig (latentstore/flags.py: an unknown flag is an error)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..flags import opt, parse_config

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how fast (the last block never changes a number)."""
    store: str = opt(None, "store folder (latentstore build --out)", required=True)
    checkpoint: str = opt(None, "trainer checkpoint (.pt)", required=True)
    split: str = opt("val", "split of the store to evaluate")
    variant: int = opt(0, "stored augmentation variant to read (val: 0)")
    out: str | None = opt(None, "eval.json path (default: next to the checkpoint)")
    method: str | None = opt(None, "label in tables/plots (default: from the checkpoint)")
    complexity: bool = opt(False, "also record params, MACs and latency")
    # These change speed only.
    batch_size: int = opt(32, "crops per batch")
    workers: int = opt(0, "DataLoader worker processes per rank")
    device: str = opt("auto", "auto: cuda if present", ("auto", "cpu", "cuda"))
    precision: str = opt("auto", "auto: bf16 autocast + channels_last on CUDA, fp32 on CPU", PRECISIONS)
    progress: bool = opt(True, "show a progress bar (rank 0)", off_flag="--quiet")   # --quiet, as in the CLI

    def validate(self) -> None:
        if self.batch_size < 1 or self.workers < 0:
            raise ConfigError(f"--batch-size must be >= 1 and --workers >= 0, got {self.batch_size} and {self.workers}")

    def out_path(self) -> Path:
        return Path(self.out) if self.out else Path(self.checkpoint).resolve().parent / "eval.json"


#: task -> (script, the flag defaults that differ from EvalConfig's)
TASKS = {"classification": ("eval/classify.py", {}),
         "segmentation": ("eval/segment.py", {"batch_size": 1})}   # full Cityscapes frames, one at a time


def parse_args(argv, task: str) -> EvalConfig:
    """eval/classify.py and eval/segment.py flags -> EvalConfig (argparse exits on an unknown flag)."""
    script, defaults = TASKS[task]
    return parse_config(EvalConfig, argv, prog=script, defaults=defaults,
                        description=f"Evaluate a {task} checkpoint on a stored split.")
