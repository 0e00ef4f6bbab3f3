"""The arguments of `latentstore build`, resolved and checked: what decides a store's bytes.

``BuildConfig.identity()`` is what a resumed build must repeat and what the
manifest records; the last block of fields changes speed only, never bytes.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..coders.registry import LoadedCoder, check_metric, get_spec, load_coder
from ..errors import ConfigError
from ..store.format import OPTIONAL_FIELDS
from ..store.numerics import MODES
from ..store.writers import WRITERS
from ..teacher.dtypes import TEACHER_DTYPES
from ..teacher.load import TEACHER_ARGS, Teacher, load_teacher, resolve_teacher_args
from .augment import SAMPLERS, SEG_SCALE, SINGLE_VARIANT_MODES
from .sources import SEGMENTATION

Y_HAT_DTYPES = {"float16": np.float16, "float32": np.float32}


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides a store's bytes, plus how fast to make them (the last block)."""
    coder: str
    quality: int
    dataset: str
    root: str
    split: str
    out: str
    weights: str = "pretrained"
    variants: int = 1
    augment: str | None = None        # augment.SAMPLERS; default: (seg-)train for the train split, else (seg-)val
    seed: int = 0
    crop: int | None = None           # default 224, or 640 for seg-train (docs/method.md §3)
    resize: int = 256
    limit: int | None = None
    label_file: str | None = None
    shard_size: int = 1000
    y_hat_dtype: str = "float16"
    fields: tuple = ()
    max_rejects: int = 100
    scale: tuple | None = None        # seg-train random scale range; default (0.5, 2.0)
    format: str = "webdataset"        # store backend: a key of writers.WRITERS
    teacher: str | None = None        # teacher features beside the latent (teacher/); None: none
    teacher_weights: str = "pretrained"
    teacher_strides: tuple = (8, 16, 32)
    teacher_layers: tuple = ()        # module names; replace the strides (segmentation backbones)
    teacher_dtype: str = "float16"
    numerics: str = "portable"        # numerics.MODES: CPU dispatch pinned to a baseline (portable) or not
    metric: str = "mse"               # coders.METRICS: which zoo weights --weights pretrained loads
    # These change speed or the share of the work, never bytes.
    batch_size: int = 32
    workers: int = 0
    part: tuple = (0, 1)              # (i, N): this process builds item groups j with j % N == i
    encoders: int = 1                 # processes encoding item groups in parallel (each decodes its own)
    device: str = "cpu"               # DEVICES: where g_a, h_a (and the teacher) run; see _check_device

    def resolved(self) -> "BuildConfig":
        spec = get_spec(self.coder)
        seg = "seg-" if self.dataset in SEGMENTATION else ""
        augment = self.augment or (seg + ("train" if self.split == "train" else "val"))
        crop = self.crop if self.crop is not None else (640 if augment == "seg-train" else 224)
        if self.scale is not None:  # checked even where seg-train is not the augmentation: a typo is a typo
            _check_scale(self.scale)
        scale = tuple(self.scale or SEG_SCALE) if augment == "seg-train" else None
        cfg = BuildConfig(**{**asdict(self), "coder": spec.name, "augment": augment, "crop": crop,
                             "scale": scale, "fields": tuple(sorted(set(self.fields))),
                             **resolve_teacher_args(self.teacher_strides, self.teacher_layers)})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.augment not in SAMPLERS:
            raise ConfigError(f"Invalid --augment {self.augment!r}: choose {', '.join(SAMPLERS)}")
        if self.augment in SINGLE_VARIANT_MODES and self.variants != 1:
            raise ConfigError(f"--variants {self.variants} with {self.augment} augmentation (deterministic) "
                              "would store identical copies: use --variants 1, or a train augmentation")
        if self.format not in WRITERS:
            raise ConfigError(f"Invalid --format {self.format!r}: choose {', '.join(WRITERS)}")
        if self.scale is not None:
            _check_scale(self.scale)
        check_split_name(self.split)
        _check_out_apart(self.root, self.out)
        for name, value in (("crop", self.crop), ("resize", self.resize)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"Invalid --{name} {value!r}: give a size in pixels, at least 1 (e.g. 224)")
        for name, value, low in (("variants", self.variants, 1), ("shard-size", self.shard_size, 1),
                                 ("batch-size", self.batch_size, 1), ("workers", self.workers, 0),
                                 ("max-rejects", self.max_rejects, 0), ("encoders", self.encoders, 1)):
            if value < low:
                raise ConfigError(f"--{name} must be at least {low}, got {value}")
        if self.encoders > 1 and self.workers > 0:
            raise ConfigError(f"--workers {self.workers} with --encoders {self.encoders}: each encoder process "
                              "decodes its own item groups (decoding is ~1% of encoding time); drop --workers")
        _check_device(self.device)
        if self.numerics not in MODES:
            raise ConfigError(f"Invalid --numerics {self.numerics!r}: choose {' or '.join(MODES)}")
        if self.teacher_dtype not in TEACHER_DTYPES:
            raise ConfigError(f"Invalid --teacher-dtype {self.teacher_dtype!r}: choose {', '.join(TEACHER_DTYPES)}")
        if self.y_hat_dtype not in Y_HAT_DTYPES:
            raise ConfigError(f"Invalid --y-hat-dtype {self.y_hat_dtype!r}: choose {', '.join(Y_HAT_DTYPES)}")
        unknown = set(self.fields) - set(OPTIONAL_FIELDS)
        if unknown:
            raise ConfigError(f"Unknown --fields {', '.join(sorted(unknown))}: choose from {', '.join(OPTIONAL_FIELDS)}")
        check_metric(self.weights, self.metric)
        if get_spec(self.coder).path == "generic":
            from .generic_encoder import check_fields

            check_fields(self.coder, self.fields)

    def identity(self) -> dict:
        """The arguments a resumed build must repeat exactly (speed knobs excluded)."""
        d = asdict(self)
        for speed_only in ("batch_size", "workers", "out", "part", "encoders", "device"):
            d.pop(speed_only)
        d["fields"] = list(self.fields)
        d["scale"] = list(self.scale) if self.scale is not None else None
        d["root"] = str(Path(self.root).resolve())
        if self.metric == "mse":  # absent: mse, as stores built before --metric record it
            d.pop("metric")
        for k in TEACHER_ARGS:  # without a teacher the identity stays what it always was
            if self.teacher is None:
                d.pop(k)
            elif isinstance(d[k], tuple):
                d[k] = list(d[k])
        return d

    def load_coder(self) -> LoadedCoder:
        """The coder this build names, loaded."""
        return load_coder(self.coder, self.quality, self.weights, seed=self.seed, metric=self.metric)

    def load_teacher(self) -> Teacher | None:
        """The teacher this build names, loaded (None without one)."""
        if self.teacher is None:
            return None
        return load_teacher(self.teacher, self.teacher_weights, self.teacher_strides, self.teacher_layers,
                            self.teacher_dtype, seed=self.seed)


#: A split name is one folder of the store: a single path component, no dot names, not the parts folder.
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_RESERVED_SPLITS = frozenset({"parts"})


def check_split_name(split) -> None:
    if not isinstance(split, str) or not _SPLIT_NAME.fullmatch(split) or split in _RESERVED_SPLITS:
        raise ConfigError(f"Invalid --split {split!r}: a split name is one plain folder name (letters, digits, "
                          "'_', '-', '.', starting with a letter or digit; not 'parts'), e.g. train or val")


def _check_scale(scale) -> None:
    try:
        low, high = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ConfigError(f"Invalid --scale {scale!r}: give two numbers, low and high, e.g. 0.5 2.0") from None
    if not 0 < low <= high or not np.isfinite(high):
        raise ConfigError(f"Invalid --scale {low:g} {high:g}: need 0 < low <= high, e.g. 0.5 2.0")


def _check_out_apart(root: str, out: str) -> None:
    """The store and the dataset must not overlap: a store inside the dataset becomes part of it (a new class,
    stray images), and a dataset inside the store is a stray in it."""
    root_path, out_path = Path(root).resolve(), Path(out).resolve()
    if out_path.is_relative_to(root_path) or root_path.is_relative_to(out_path):
        raise ConfigError(f"--out {out} and --root {root} overlap: put the store in a folder outside the "
                          "dataset (and the dataset outside the store)")


#: Where the analysis transforms (g_a, h_a) run. Everything the decoder recomputes stays on the CPU
#: either way (build/encoder.py), so strings decode exactly; but a cuda store is not byte-identical to a cpu
#: one (a y or z value on a rounding boundary gets another symbol), so the device is recorded and a
#: resume on the other device is refused.
DEVICES = ("cpu", "cuda")


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise ConfigError(f"Invalid --device {device!r}: choose {' or '.join(DEVICES)}")


def check_device_present(device: str) -> None:
    """Before a build starts: --device cuda needs a GPU torch can see."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda, but torch sees no GPU on this machine: use --device cpu "
                              "(and --encoders N), or run the build on a GPU node")


def device_entry(device: str) -> dict:
    """What the manifest records about where a store was encoded (info shows it)."""
    entry = {"device": device}
    if device == "cuda":
        import torch

        entry["gpu"] = torch.cuda.get_device_name(0)
    return entry
