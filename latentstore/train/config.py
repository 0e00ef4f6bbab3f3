"""Trainer configuration: one frozen dataclass, parsed from flags by latentstore/flags.py (an unknown
flag is an error; `--config FILE.yaml` sets any flag).

The resolved config goes into every checkpoint, so it holds primitives only
(torch.load(weights_only=True) reads it back).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError
from ..flags import opt, parse_config  # noqa: F401  (parse_config: the trainers' entry, latentstore.train)
from ..store.location import is_url, shown

TRANSFERS = ("none", "mse", "mae", "cos")


#: Fields that steer a run without changing what it computes: a resume may change them freely.
#: Every other field (a subclass's too) is a hyperparameter, compared with the checkpoint's on resume.
RUN_CONTROLS = frozenset({"store", "out", "resume", "device", "workers", "progress", "log_every", "save_every",
                          "max_steps", "epochs", "compile", "max_skips", "resume_with_new_hparams",
                          "val_split", "val_every"})


@dataclass(frozen=True)
class TrainConfig:
    """Flags shared by train/classify.py and train/segment.py; each script sets its recipe's defaults."""
    store: str = opt(None, "store folder (reads manifest.json)", required=True)
    out: str = opt(None, "run folder: checkpoints, metrics.csv, TensorBoard events", required=True)
    split: str = opt("train", "split of the store to train on")
    model: str = opt("resnet50-aa", "any latentstore.models name (`latentstore models`)")
    pixel_weights: str = opt("none", "init from the pixel model: none | pretrained | PATH to a state_dict")
    transfer: str = opt("none", "knowledge-transfer loss on the teacher maps in the store", TRANSFERS)
    beta: float = opt(1.0, "weight of the transfer loss")
    teacher: str = opt("", "teacher the store must hold (name), checked with --teacher-weights; "
                           "empty: use the store's teacher as recorded")
    teacher_weights: str = opt("pretrained", "pretrained | PATH | untrained: weights --teacher must have")
    coder_weights: str = opt("", "decode+<model>: coder weights (default: as recorded in the manifest)")
    epochs: int = opt(16, "epochs; epoch e reads stored variant e mod K")
    batch_size: int = opt(256, "GLOBAL batch size (split evenly over ranks)")
    lr: float = opt(0.01, "initial learning rate")
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(1e-4, "SGD weight decay")
    milestones: tuple = opt((), "epochs at which lr is multiplied by --gamma (default: the task's recipe)")
    gamma: float = opt(0.1, "lr decay factor at each milestone")
    seed: int = opt(0, "seed of the model init, the epoch order and per-step randomness")
    shuffle_window: int = opt(4, "shards shuffled together in memory (order = f(seed, epoch))")
    workers: int = opt(4, "DataLoader workers per rank")
    max_skips: int = opt(0, "damaged samples tolerated (skipped and logged); 0 = strict")
    save_every: int = opt(500, "checkpoint every N steps (and at every epoch end)")
    log_every: int = opt(20, "log scalars every N steps")
    max_steps: int = opt(0, "stop after this many steps in total (0: run all epochs)")
    resume: str = opt("auto", "auto (OUT/last.pt if present) | never | PATH")
    device: str = opt("auto", "auto | cpu | cuda")
    precision: str = opt("auto", "auto: bf16 autocast + channels_last on CUDA, fp32 on CPU | bf16 | fp32",
                         ("auto", "bf16", "fp32"))
    compile: bool = opt(False, "torch.compile the model (the first steps compile; CUDA mostly)")
    progress: bool = opt(True, "show a progress bar (rank 0)")
    val_split: str = opt("auto", "split to validate on after epochs (top-1 or mIoU; best.pt keeps the best): "
                                 "auto = the store's 'val' split if it has one | NAME | none")
    val_every: int = opt(1, "validate every N epochs (and after the last)")
    resume_with_new_hparams: bool = opt(False, "resume although hyperparameters differ from the checkpoint's "
                                               "(a deliberate change: the new values apply from the resumed step)")

    def validate(self) -> None:
        if not self.store or not self.out:
            raise ConfigError("--store and --out are required")
        if is_url(self.store) and shown(self.store) != self.store.rstrip("/"):  # it is saved in checkpoints
            raise ConfigError(f"--store {shown(self.store)}: give credentials through the backend's environment "
                              "or config files (e.g. AWS_ACCESS_KEY_ID), not in the URL: checkpoints record it")
        for name in ("epochs", "batch_size", "shuffle_window", "save_every", "log_every", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.transfer != "none" and self.beta <= 0:
            raise ConfigError(f"--transfer {self.transfer} with --beta {self.beta}: use a positive beta, "
                              "or --transfer none")
        if any(not 0 < m <= self.epochs for m in self.milestones):
            raise ConfigError(f"--milestones {list(self.milestones)} must lie in 1..{self.epochs}")

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def changed_hparams(self, saved: dict) -> list[str]:
        """'--name old → new' for each hyperparameter that differs from `saved` (a checkpoint's config)."""
        mine = self.as_dict()
        return [f"--{k.replace('_', '-')} {_shown(saved[k])} → {_shown(v)}" for k, v in mine.items()
                if k not in RUN_CONTROLS and k in saved and _comparable(saved[k]) != _comparable(v)]


def _comparable(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def _shown(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) or "(none)"
    return repr(value) if value == "" else str(value)


def write_args(cfg, out) -> None:
    """Write the resolved config to OUT/args.yaml: `--config OUT/args.yaml` reruns the same run."""
    from pathlib import Path

    import yaml

    text = yaml.safe_dump(cfg.as_dict(), sort_keys=False, default_flow_style=None)
    path = Path(out) / "args.yaml"
    tmp = path.with_name(".args.yaml.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def run_script(main) -> int:
    """Run a trainer's main(); a LatentstoreError (a problem the user can fix) prints its message, exit 1."""
    import sys

    from ..errors import LatentstoreError
    from .stop import Stopped

    try:
        main()
    except LatentstoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Stopped as exc:
        print(exc, file=sys.stderr)
        return exc.code
    return 0
