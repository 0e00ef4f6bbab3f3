"""Trainer configuration: one frozen dataclass, parsed from flags (an unknown flag is an error).

Each field becomes ``--field-name``; its type decides parsing (bool: --x/--no-x,
tuple: comma-separated list), ``metadata={"choices": ..., "help": ...}`` adds
choices and help. The resolved config goes into every checkpoint, so it holds
primitives only (torch.load(weights_only=True) reads it back).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..store.location import is_url, shown

TRANSFERS = ("none", "mse", "mae", "cos")


#: Fields that steer a run without changing what it computes: a resume may change them freely.
#: Every other field (a subclass's too) is a hyperparameter, compared with the checkpoint's on resume.
RUN_CONTROLS = frozenset({"store", "out", "resume", "device", "workers", "progress", "log_every", "save_every",
                          "max_steps", "epochs", "compile", "max_skips", "resume_with_new_hparams",
                          "val_split", "val_every"})


def opt(default, help: str = "", choices=None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class TrainConfig:
    """Flags shared by train/classify.py and train/segment.py; each script sets its recipe's defaults."""
    store: str = opt(None, "store folder (reads manifest.json)")
    out: str = opt(None, "run folder: checkpoints, metrics.csv, TensorBoard events")
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
        """'--name old → new' for each hyperparameter that differs from `saved` (a checkpoint's config);
        fields `saved` does not record (an older checkpoint) are not compared."""
        mine = self.as_dict()
        return [f"--{k.replace('_', '-')} {_shown(saved[k])} → {_shown(v)}" for k, v in mine.items()
                if k not in RUN_CONTROLS and k in saved and _comparable(saved[k]) != _comparable(v)]


def _comparable(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def _shown(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) or "(none)"
    return repr(value) if value == "" else str(value)


def _parser_type(tp):
    origin = typing.get_origin(tp)
    if tp is tuple or origin is tuple:
        return lambda s: tuple(int(x) for x in s.split(",") if x.strip())
    return {"int": int, "float": float, "str": str}.get(getattr(tp, "__name__", str(tp)), str)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where X means something: not for required flags, empty defaults
    or help that already says what the default is."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.required:
            return f"{text} (required)"
        if action.default in (None, "", ()) or "default" in text:
            return text
        return super()._get_help_string(action)


def _yaml_values(path: str, cls, hints: dict) -> dict:
    """The flags FILE.yaml sets ({field: value}), typed as the flags would be; an unknown key or a
    value of the wrong type is a ConfigError naming the file and the key."""
    import yaml  # only where --config is given: --help stays fast

    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of flag names to values")
    names = {f.name for f in dataclasses.fields(cls)}
    typed = {}
    for key, value in values.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in names:
            raise ConfigError(f"--config {path}: unknown key {key!r} (keys are flag names, e.g. lr or batch-size)")
        tp = hints[name]
        try:
            if tp is tuple or typing.get_origin(tp) is tuple:
                value = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) \
                    else _parser_type(tp)(str(value))
            elif tp is bool:
                if not isinstance(value, bool):
                    raise ValueError(value)
            elif value is not None:
                value = _parser_type(tp)(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"--config {path}: {key}: {value!r} is not a valid {getattr(tp, '__name__', tp)}") \
                from exc
        typed[name] = value
    return typed


def write_args(cfg, out) -> None:
    """Write the resolved config to OUT/args.yaml: `--config OUT/args.yaml` reruns the same run."""
    from pathlib import Path

    import yaml

    text = yaml.safe_dump(cfg.as_dict(), sort_keys=False, default_flow_style=None)
    path = Path(out) / "args.yaml"
    tmp = path.with_name(".args.yaml.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def parse_config(cls, argv=None):
    """Parse `argv` (None: sys.argv) into `cls`; unknown flags and bad values exit with a usage error.
    `--config FILE.yaml` sets any flag (keys are flag names); flags given on the command line override it."""
    parser = argparse.ArgumentParser(description=(cls.__doc__ or "").strip(), allow_abbrev=False,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--config", metavar="FILE.yaml", default="",
                        help="YAML file of flag values (e.g. a run's args.yaml); flags given here override it")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        meta = dict(f.metadata)
        if hints[f.name] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=meta.get("help"))
        else:
            parser.add_argument(flag, type=_parser_type(hints[f.name]), default=f.default,
                                choices=meta.get("choices"), help=meta.get("help"),
                                required=f.default is None)   # --store, --out
    # --config first, on its own: required flags (--store, --out) may come from the file
    pre_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre_parser.add_argument("--config", default="")
    pre, _ = pre_parser.parse_known_args(argv)
    if pre.config:
        try:
            values = _yaml_values(pre.config, cls, hints)
        except ConfigError as exc:
            parser.error(str(exc))
        parser.set_defaults(**values)
        for action in parser._actions:       # a required flag the file sets is no longer required
            if action.dest in values:
                action.required = False
    args = vars(parser.parse_args(argv))  # unknown flag: argparse prints usage and exits with status 2
    args.pop("config")
    cfg = cls(**args)
    try:
        cfg.validate()
    except ConfigError as exc:
        parser.error(str(exc))
    return cfg


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
