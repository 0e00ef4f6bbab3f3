"""The eval scripts' flags -> a frozen EvalConfig (argparse: an unknown flag is an error)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how fast (the last block never changes a number)."""
    store: str
    checkpoint: str
    split: str = "val"
    variant: int = 0
    out: str | None = None            # eval.json path; default: next to the checkpoint
    method: str | None = None         # label in tables and plots; default from the checkpoint
    complexity: bool = False          # also measure params, MACs and latency of the model
    batch_size: int = 32
    workers: int = 0
    device: str = "cpu"
    precision: str = "auto"           # auto: bf16 autocast + channels_last on CUDA, fp32 on CPU (train/speed.py)
    progress: bool = True             # a progress bar on rank 0

    def out_path(self) -> Path:
        return Path(self.out) if self.out else Path(self.checkpoint).resolve().parent / "eval.json"


def parse_args(argv, task: str) -> EvalConfig:
    """eval/classify.py and eval/segment.py flags -> EvalConfig (argparse exits on an unknown flag)."""
    p = argparse.ArgumentParser(prog=f"eval/{'classify' if task == 'classification' else 'segment'}.py",
                                description=f"Evaluate a {task} checkpoint on a stored split.",
                                allow_abbrev=False)
    p.add_argument("--store", required=True, help="store folder (latentstore build --out)")
    p.add_argument("--checkpoint", required=True, help="trainer checkpoint (.pt)")
    p.add_argument("--split", default="val")
    p.add_argument("--variant", type=int, default=0, help="stored augmentation variant to read (val: 0)")
    p.add_argument("--out", default=None, help="eval.json path (default: next to the checkpoint)")
    p.add_argument("--method", default=None, help="label in tables/plots (default: from the checkpoint)")
    p.add_argument("--complexity", action="store_true", help="also record params, MACs and latency")
    p.add_argument("--batch-size", type=int, default=32 if task == "classification" else 1)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes per rank")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda if present")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="auto: bf16 autocast + channels_last on CUDA, fp32 on CPU")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.batch_size < 1 or a.workers < 0:
        p.error("--batch-size must be >= 1 and --workers >= 0")
    return EvalConfig(a.store, a.checkpoint, a.split, a.variant, a.out, a.method, a.complexity,
                      a.batch_size, a.workers, a.device, a.precision, progress=not a.quiet)
