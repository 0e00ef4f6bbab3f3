"""The arguments of `latentstore build`, resolved and checked: what decides a store's bytes.

Each field carries its flag's help, choices and default (latentstore/flags.py; commands/cli.py makes
the click options from them). ``BuildConfig.identity()`` is what a resumed build must repeat and what
the manifest records; the last block of fields changes speed only, never bytes. This module imports
nothing heavy: ``checked()`` finds every argument error before the codec (seconds) is imported.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..coders.names import METRICS, canonical_coder, check_coder_quality, check_metric, coder_help
from ..errors import ConfigError
from ..flags import comma_ints, comma_words, opt
from ..store.numerics import MODES
from ..teacher.names import DEFAULT_STRIDES, TEACHER_ARGS, TEACHER_DTYPES, check_teacher_name, resolve_teacher_args

if TYPE_CHECKING:
    from ..coders.registry import LoadedCoder
    from ..teacher.load import Teacher

Y_HAT_DTYPES = ("float16", "float32")
#: The names of the tables that live with heavier code (tests/test_startup.py checks that they agree):
DATASETS = ("imagenet", "imagefolder", "cityscapes")         # build/sources.py OPENERS
AUGMENTATIONS = ("train", "val", "seg-train", "seg-val")     # build/augment.py SAMPLERS
FORMATS = ("webdataset", "zarr")                             # store/writers.py WRITERS

#: Where the analysis transforms (g_a, h_a) run. Everything the decoder recomputes stays on the CPU
#: either way (build/encoder.py), so strings decode exactly; but a cuda store is not byte-identical to a cpu
#: one (a y or z value on a rounding boundary gets another symbol), so the device is recorded and a
#: resume on the other device is refused.
DEVICES = ("cpu", "cuda")


def _existing_folder(text: str) -> str:
    if not Path(text).is_dir():
        raise ConfigError(f"folder {text!r} does not exist")
    return text


def _existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise ConfigError(f"file {text!r} does not exist")
    return text


def _folder(text: str) -> str:
    if Path(text).exists() and not Path(text).is_dir():
        raise ConfigError(f"{text!r} is a file, not a folder")
    return text


def encoder_count(text: str) -> int:
    """--encoders N, or 'auto': the CPUs this process may run on (SLURM's --cpus-per-task, taskset)."""
    if text == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{text!r} is neither a number nor 'auto'") from None


def part_of_split(text: str) -> tuple:
    """--part i/N or auto (store/seal.py reads it)."""
    from ..store.seal import parse_part

    return parse_part(text)


def _fields_help() -> str:
    from ..store.format import OPTIONAL_FIELDS  # numpy: only when the help is shown

    return f"Extra fields, comma separated: {', '.join(OPTIONAL_FIELDS)}."


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides a store's bytes, plus how fast to make them (the last block)."""
    coder: str = opt(help=coder_help)
    quality: int = opt(help="Codec quality (1-8 for bmshj2018/mbt2018, 1-6 for cheng2020).")
    dataset: str = opt(help="imagenet: <root>/<split>/<synset>/*.JPEG (val may be flat + label file); "
                            "imagefolder: any <root>/<split>/<class>/* tree; cityscapes: <root>/leftImg8bit/<split>/"
                            "<city>/*_leftImg8bit.png + <root>/gtFine/... label maps (stored as label_map).",
                       choices=DATASETS)
    root: str = opt(help="Dataset root folder.", parse=_existing_folder, metavar="DIRECTORY")
    split: str = opt("train", "Split folder under the root.")
    out: str = opt(None, "Store folder (created; reruns resume).", required=True, parse=_folder,
                   metavar="DIRECTORY")
    weights: str = opt("pretrained", "'pretrained' (zoo weights via the TORCH_HOME cache), a CompressAI checkpoint "
                                     "PATH, or 'untrained' (seeded random weights, for demos and tests only). Coders "
                                     "outside the zoo (elic2022-*, cheng2020-checkerboard) take a PATH or 'untrained'.")
    variants: int = opt(1, "Augmentation variants per image (epoch e of training reads variant e mod K).")
    augment: str | None = opt(None, "train: RandomResizedCrop + flip; val: resize + center crop; seg-train: random "
                                    "scale + crop (padded) + flip of image and label map; seg-val: the full image. "
                                    "Default: (seg-)train for the train split, else (seg-)val; seg- for cityscapes.",
                              AUGMENTATIONS)
    seed: int = opt(0, "Augmentation seed (and untrained weights' seed).")
    crop: int | None = opt(None, "Crop size in pixels (padded to a multiple of 64). Default 224; 640 for seg-train.")
    resize: int = opt(256, "Val: shorter side before the center crop.")
    limit: int | None = opt(None, "Use N images: a deterministic round-robin across classes (nested: N is within "
                                  "N+1).")
    label_file: str | None = opt(None, "Labels for a flat ImageNet val folder.", parse=_existing_file, metavar="FILE")
    shard_size: int = opt(1000, "Source images per shard.")
    y_hat_dtype: str = opt("float16", "Stored ŷ: float16 (half the bytes, rounded from the exact value) or float32 "
                                      "(bit-exact).", Y_HAT_DTYPES)
    fields: tuple = opt((), _fields_help, parse=comma_words)
    max_rejects: int = opt(100, "Fail once more than this many images are unreadable.")
    scale: tuple | None = opt(None, "seg-train: random scale range LOW HIGH. Default 0.5 2.0.", parse=float, nargs=2)
    format: str = opt("webdataset", "Store backend: WebDataset tar shards, or a Zarr v3 store (random access by key).",
                      FORMATS)
    teacher: str | None = opt(None, "Teacher whose feature maps are stored beside the latent: any timm CNN with "
                                    "features_only (e.g. resnet50), or pspnet50 (segmentation, by --teacher-layers).")
    teacher_weights: str = opt("pretrained", "'pretrained' (timm's weights via the Hugging Face cache), a state_dict "
                                             "PATH (.pth/.safetensors), or 'untrained' (seeded, for tests only).")
    teacher_strides: tuple = opt(DEFAULT_STRIDES, "Feature strides to store, picked through timm's FeatureInfo (one "
                                                  "field each).", parse=comma_ints)
    teacher_layers: tuple = opt((), "Layer names to store instead of strides, e.g. layer2,layer3,layer4 "
                                    "(segmentation backbones).", parse=comma_words)
    teacher_dtype: str = opt("float16", "int8: symmetric, a float32 scale per sample and channel.", TEACHER_DTYPES)
    numerics: str = opt("portable", "portable: every stored value is computed with the CPU dispatch of torch, oneDNN "
                                    "and MKL pinned to AVX2 and MKL's COMPATIBLE branch, so the store is the same on "
                                    "any x86-64 CPU with AVX2 (the encoder 3-18% slower on an AVX-512 CPU; the command "
                                    "restarts itself with the pins set). native: this machine's own kernels; another "
                                    "CPU family then computes other float last bits (docs/FORMAT.md, \"What is "
                                    "exact\").", MODES)
    metric: str = opt("mse", "Which zoo weights --weights pretrained loads: trained for MSE or for MS-SSIM.", METRICS)
    # These change speed or the share of the work, never bytes.
    batch_size: int = opt(32, "Crops per encoder batch (never changes a byte: every stored computation runs per "
                              "image).")
    workers: int = opt(0, "Decode/augment processes (speed only).")
    part: tuple = opt((0, 1), "Build only part i/N of the split (e.g. 3/64), or 'auto' from SLURM_ARRAY_TASK_ID/"
                              "SLURM_ARRAY_TASK_COUNT or RANK/WORLD_SIZE; then run `latentstore seal` (default: the "
                              "whole split).", parse=part_of_split, metavar="i/N|auto")
    encoders: int = opt(1, "Encoder processes, each encoding (and decoding) whole item groups (speed only): one per "
                           "core, or 'auto' for the cores this job may use (see docs/benchmarks.md). Not with "
                           "--workers.", parse=encoder_count, metavar="N|auto")
    device: str = opt("cpu", "Where g_a and h_a run. cuda: batched on the GPU, the rest (what the decoder recomputes) "
                             "on the CPU, so strings still decode exactly; the store is then not byte-identical to a "
                             "cpu build, and its device and GPU model are recorded (docs/benchmarks.md).", DEVICES)

    def checked(self) -> "BuildConfig":
        """This config with its defaults resolved (coder alias, augmentation, crop, scale, sorted fields,
        teacher taps), every argument checked; imports nothing heavy, so a typo is reported at once."""
        check_coder_quality(self.coder, self.quality)   # first: the next imports cost numpy and Pillow
        from .augment import SEG_SCALE
        from .sources import SEGMENTATION

        seg = "seg-" if self.dataset in SEGMENTATION else ""
        augment = self.augment or (seg + ("train" if self.split == "train" else "val"))
        crop = self.crop if self.crop is not None else (640 if augment == "seg-train" else 224)
        if self.scale is not None:  # checked even where seg-train is not the augmentation: a typo is a typo
            _check_scale(self.scale)
        scale = tuple(self.scale or SEG_SCALE) if augment == "seg-train" else None
        cfg = BuildConfig(**{**asdict(self), "coder": canonical_coder(self.coder), "augment": augment, "crop": crop,
                             "scale": scale, "fields": tuple(sorted(set(self.fields))),
                             **resolve_teacher_args(self.teacher_strides, self.teacher_layers)})
        cfg.validate()
        return cfg

    def resolved(self) -> "BuildConfig":
        """`checked()`, then the checks that need the coder itself (a custom coder's module is imported)."""
        from ..coders.registry import get_spec

        cfg = self.checked()
        if get_spec(cfg.coder).path == "generic":
            from .generic_encoder import check_fields

            check_fields(cfg.coder, cfg.fields)
        return cfg

    def validate(self) -> None:
        from ..store.format import OPTIONAL_FIELDS
        from .augment import SINGLE_VARIANT_MODES

        if not self.out:
            raise ConfigError("--out is required: the store folder to create")
        for name in ("dataset", "augment", "format", "device", "numerics", "teacher_dtype", "y_hat_dtype"):
            choices = BuildConfig.__dataclass_fields__[name].metadata["choices"]
            if getattr(self, name) not in choices:
                listed = " or ".join(choices) if len(choices) == 2 else ", ".join(choices)
                raise ConfigError(f"Invalid --{name.replace('_', '-')} {getattr(self, name)!r}: choose {listed}")
        if self.augment in SINGLE_VARIANT_MODES and self.variants != 1:
            raise ConfigError(f"--variants {self.variants} with {self.augment} augmentation (deterministic) "
                              "would store identical copies: use --variants 1, or a train augmentation")
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
        unknown = set(self.fields) - set(OPTIONAL_FIELDS)
        if unknown:
            raise ConfigError(f"Unknown --fields {', '.join(sorted(unknown))}: "
                              f"choose from {', '.join(OPTIONAL_FIELDS)}")
        check_metric(self.weights, self.metric)
        check_teacher_name(self.teacher)

    def identity(self) -> dict:
        """The arguments a resumed build must repeat exactly (speed knobs excluded)."""
        d = asdict(self)
        for speed_only in ("batch_size", "workers", "out", "part", "encoders", "device"):
            d.pop(speed_only)
        d["fields"] = list(self.fields)
        d["scale"] = list(self.scale) if self.scale is not None else None
        d["root"] = str(Path(self.root).resolve())
        if self.metric == "mse":  # the default is not recorded: an identity without "metric" means mse
            d.pop("metric")
        for k in TEACHER_ARGS:  # without a teacher, its arguments are not part of the identity
            if self.teacher is None:
                d.pop(k)
            elif isinstance(d[k], tuple):
                d[k] = list(d[k])
        return d

    def load_coder(self) -> LoadedCoder:
        """The coder this build names, loaded."""
        from ..coders.registry import load_coder

        return load_coder(self.coder, self.quality, self.weights, seed=self.seed, metric=self.metric)

    def load_teacher(self) -> Teacher | None:
        """The teacher this build names, loaded (None without one)."""
        from ..teacher.load import load_teacher

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
    if not 0 < low <= high or not math.isfinite(high):
        raise ConfigError(f"Invalid --scale {low:g} {high:g}: need 0 < low <= high, e.g. 0.5 2.0")


def _check_out_apart(root: str, out: str) -> None:
    """The store and the dataset must not overlap: a store inside the dataset becomes part of it (a new class,
    stray images), and a dataset inside the store is a stray in it."""
    root_path, out_path = Path(root).resolve(), Path(out).resolve()
    if out_path.is_relative_to(root_path) or root_path.is_relative_to(out_path):
        raise ConfigError(f"--out {out} and --root {root} overlap: put the store in a folder outside the "
                          "dataset (and the dataset outside the store)")


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
