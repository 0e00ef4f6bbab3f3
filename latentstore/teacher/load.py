"""Loading a teacher and running it on the crops a build encodes (build side; docs/method.md §5).

A teacher is a frozen pixel-domain CNN. Its input is the very uint8 crop the
coder encoded (UNPADDED: padding is the coder's business), scaled to [0, 1]
and normalized with the teacher's own mean/std from its timm pretrained config.
Its outputs are picked by stride through timm's ``features_only`` FeatureInfo
(ResNet-50 at 224: 512x28x28, 1024x14x14, 2048x7x7 at strides 8, 16, 32), or
by module name (``layers``) for a segmentation backbone whose stages share one
stride (PSPNet-50 at output stride 8).

Each tap becomes one field, ``teacher_s<stride>`` or ``teacher_<layer>``, stored
in one of the dtypes of ``latentstore.teacher.dtypes``. The teacher runs one
image at a time: batched CPU convolutions change float bits with the batch size,
and a store's bytes must not depend on --batch-size (docs/FORMAT.md "Teacher
fields" and "What is exact, against what").
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, WeightsError
from ..store.format import LATENT_STRIDE, TEACHER_PREFIX, file_sha256
from ..store.threads import store_threads
from ..weights import (
    check_file,
    hash_prefix,
    hf_cache_dir,
    hf_cached_file,
    offline_reason,
    recipe_sha256,
    state_dict_sha256,
    torch_hub_file,
)
from .dtypes import TEACHER_DTYPES, quantize
from .fingerprint import expected_fingerprint
from .names import (  # noqa: F401  (their users' import)
    DEFAULT_STRIDES,
    SEGMENTATION_TEACHERS,
    TEACHER_ARGS,
    parse_list,
    resolve_teacher_args,
)


@dataclass(frozen=True)
class TeacherTap:
    field: str     # "teacher_s8" / "teacher_layer3"
    layer: str     # module name inside the teacher
    stride: int    # reduction w.r.t. the crop
    channels: int


@dataclass
class Teacher:
    """A loaded, frozen teacher and how its outputs are stored."""
    name: str
    model: nn.Module
    taps: list
    mean: tuple
    std: tuple
    weights: dict            # provenance: source, trained, sha256 (of the state dict), path/url/seed
    dtype: str
    selection: dict          # {"strides": [...]} or {"layers": [...]}
    _run: object = field(repr=False, default=None)  # x [1,3,H,W] -> list of maps in taps order

    @torch.no_grad()
    def features(self, crop: np.ndarray) -> dict:
        """float32 [C,h,w] per tap field for ONE uint8 HxWx3 crop (one image per forward, see module doc)."""
        # contiguous(): a permuted HWC view is channels_last, where convolutions pick other kernels.
        x = torch.from_numpy(np.array(crop, dtype=np.uint8)).permute(2, 0, 1)[None].contiguous().float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        with store_threads():  # the stored bits depend on the thread count (store/threads.py)
            maps = self._run((x - mean) / std)
        return {t.field: m[0].float().numpy() for t, m in zip(self.taps, maps)}

    def stored_fields(self, crop: np.ndarray) -> dict:
        """{field name: stored array} of one uint8 crop's maps, in the storage dtype (int8 adds a scale field)."""
        return {f"{name}{suffix}": array for name, value in self.features(crop).items()
                for suffix, array in quantize(value, self.dtype).items()}

    def batch_fields(self, crops: list) -> list[dict]:
        """`stored_fields` of each crop, one forward each (module doc); on a GPU, device_teacher.BatchedTeacher
        runs a batch in one forward instead."""
        return [self.stored_fields(crop) for crop in crops]

    def fingerprint(self, height: int, width: int) -> dict:
        """The manifest entry: what a trainer checks (check_teacher) and the feature shapes at this crop."""
        feats = self.features(np.zeros((height, width, 3), np.uint8))
        return {**expected_fingerprint(self), "weights": self.weights, "dtype": self.dtype,
                "input": "unpadded uint8 crop / 255, then (x - mean) / std per channel",
                **{k: list(v) for k, v in self.selection.items()},
                "feature_shapes": {k: list(v.shape) for k, v in feats.items()}}


# --------------------------------------------------------------------------- loading

def _tag(layer: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", layer)


def _read_state(path: Path, name: str) -> dict:
    import timm.models

    try:
        # timm's loader: .safetensors or torch.load(weights_only=True); unwraps state_dict/model/EMA keys.
        return timm.models.load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as exc:
        raise WeightsError(f"Could not read teacher weights {path} for {name}: {exc}") from exc


def _load_strict(model: nn.Module, state: dict, source: str, name: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{source} is not a state_dict of {name}: {str(exc)[:500]}") from exc


def _pretrained_error(name: str, reason: str, looked: list) -> WeightsError:
    return WeightsError(
        f"The pretrained timm weights of {name} are not in the local caches and cannot be fetched: {reason}.\n"
        f"Looked for: {', '.join(str(p) for p in looked) or '(no released file known)'}. Either:\n"
        f"  - pre-fetch on a machine with internet: python -c \"import timm; timm.create_model('{name}', "
        f"pretrained=True)\" and copy its cache ($HF_HOME/hub, here {hf_cache_dir()}) to this machine, or\n"
        f"  - save the weights there: python -c \"import timm, torch; torch.save(timm.create_model('{name}', "
        f"pretrained=True).state_dict(), '{name}.pth')\" and pass --teacher-weights /path/to/{name}.pth\n"
        f"Set HF_HUB_OFFLINE=1 on offline nodes: nothing is then tried over the network."
    )


def _pretrained_timm(name: str, kw: dict):
    """timm's released weights of `name` from the local caches (hash-checked), else fetched when online."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    hf_id, url = (cfg.hf_hub_id, cfg.url) if cfg is not None else (None, None)
    what = f"teacher {name}"
    path = hf_cached_file(hf_id) if hf_id else None
    if path is None and url and torch_hub_file(url).is_file():
        path = torch_hub_file(url)
        check_file(path, hash_prefix(url), what)
    if path is not None:  # timm reads a file with torch.load(weights_only=True) or safetensors
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kw)
        return model, {"file_sha256": file_sha256(path)}
    looked = ([hf_cache_dir() / ("models--" + hf_id.partition("@")[0].replace("/", "--"))] if hf_id else []) + \
        ([torch_hub_file(url)] if url else [])
    reason = offline_reason("https://huggingface.co" if hf_id else url) if (hf_id or url) else "no released weights"
    if reason:
        raise _pretrained_error(name, reason, looked)
    try:
        model = timm.create_model(name, pretrained=True, **kw)
    except Exception as exc:  # hub/network errors come in many types
        raise _pretrained_error(name, f"{type(exc).__name__}: {str(exc)[:200]}", looked) from exc
    if hf_id:
        hf_cached_file(hf_id)  # the fresh download, checked against its blob hash
    return model, {}


def _timm_teacher(name, weights, strides, layers, seed):
    import timm

    try:
        probe = timm.create_model(name, pretrained=False, features_only=True)
    except RuntimeError as exc:  # timm: "Unknown model" / no features_only support
        raise ConfigError(f"Teacher {name!r} is not a timm model with features_only support ({exc})") from exc
    info = list(probe.feature_info.info)
    if layers:
        by_name = {e["module"]: i for i, e in enumerate(info)}
        missing = [l for l in layers if l not in by_name]
        if missing:
            raise ConfigError(f"--teacher-layers {','.join(missing)}: {name} has feature layers "
                              f"{', '.join(by_name)}")
        picked = [(by_name[l], TEACHER_PREFIX + _tag(l)) for l in layers]
    else:
        last = {e["reduction"]: i for i, e in enumerate(info)}  # the END of the stage at each stride
        missing = [s for s in strides if s not in last]
        if missing:
            raise ConfigError(f"--teacher-strides {','.join(map(str, missing))}: {name} has feature strides "
                              f"{', '.join(map(str, sorted(last)))}")
        picked = [(last[s], f"{TEACHER_PREFIX}s{s}") for s in strides]
    out_indices = tuple(i for i, _ in picked)
    kw = dict(features_only=True, out_indices=out_indices)
    if weights == "pretrained":
        model, found = _pretrained_timm(name, kw)
        cfg = model.pretrained_cfg
        provenance = {"source": "pretrained", "trained": True, "hf_hub_id": cfg.get("hf_hub_id"),
                      "url": cfg.get("url"), "tag": cfg.get("tag"), **found}
    elif weights == "untrained":
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False, **kw)
        provenance = {"source": "untrained", "trained": False, "seed": seed,
                      "note": "RANDOM TEACHER WEIGHTS (seeded timm init) - for demos and tests only"}
    else:
        path = _weights_path(weights)
        full = timm.create_model(name, pretrained=False)
        _load_strict(full, _read_state(path, name), str(path), name)
        model = timm.create_model(name, pretrained=False, **kw)
        full_state = full.state_dict()
        _load_strict(model, {k: full_state[k] for k in model.state_dict()}, str(path), name)
        provenance = {"source": "file", "trained": True, "path": str(path.resolve()),
                      "file_sha256": file_sha256(path)}
    model.eval()
    cfg = model.pretrained_cfg
    taps = [TeacherTap(f, info[i]["module"], info[i]["reduction"], info[i]["num_chs"]) for i, f in picked]
    return model, taps, tuple(cfg["mean"]), tuple(cfg["std"]), provenance, (lambda x: model(x))


def _pspnet_teacher(name, weights, layers, seed):
    import timm

    from ..models.pspnet import BACKBONE, PSPNet

    if weights == "pretrained":
        raise WeightsError(f"{name} has no released pixel weights: pass --teacher-weights PATH, the state_dict "
                           f"of a latentstore.models PSPNet trained on pixels (or 'untrained' for tests)")
    layers = layers or ("layer2", "layer3", "layer4")
    if weights == "untrained":
        torch.manual_seed(seed)
        model = PSPNet()
        provenance = {"source": "untrained", "trained": False, "seed": seed,
                      "note": "RANDOM TEACHER WEIGHTS (seeded init) - for demos and tests only"}
    else:
        path = _weights_path(weights)
        state = _read_state(path, name)
        classes = state["head.4.weight"].shape[0] if "head.4.weight" in state else 19
        model = PSPNet(num_classes=classes)
        _load_strict(model, state, str(path), name)
        provenance = {"source": "file", "trained": True, "path": str(path.resolve()),
                      "file_sha256": file_sha256(path)}
    by_name = {t.name: t for t in model.taps}
    missing = [l for l in layers if l not in by_name]
    if missing:
        raise ConfigError(f"--teacher-layers {','.join(missing)}: {name} has layers {', '.join(by_name)}")
    model.eval()
    cfg = timm.create_model(BACKBONE, pretrained=False).pretrained_cfg
    taps = [TeacherTap(TEACHER_PREFIX + _tag(l), l, by_name[l].reduction, by_name[l].channels) for l in layers]

    def run(x):
        _, feats = model(x, return_features=True)
        return [feats[t.layer] for t in taps]

    return model, taps, tuple(cfg["mean"]), tuple(cfg["std"]), provenance, run


def _weights_path(weights: str) -> Path:
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"--teacher-weights {weights!r} is neither 'pretrained', 'untrained' nor an existing file")
    return path


def load_teacher(name: str, weights: str = "pretrained", strides=DEFAULT_STRIDES, layers=(),
                 dtype: str = "float16", seed: int = 0) -> Teacher:
    """Load teacher `name` (any timm CNN with features_only, or pspnet50) with its taps and storage dtype.

    weights: "pretrained" (timm's hub weights; offline needs a filled HF cache),
    a state_dict file (.pth/.safetensors; the training checkpoint's 'state_dict'
    is unwrapped), or "untrained" (seeded, labelled as such). `layers` (module
    names) takes precedence over `strides`.
    """
    strides, layers = parse_list(strides, int), parse_list(layers)
    if dtype not in TEACHER_DTYPES:
        raise ConfigError(f"Invalid --teacher-dtype {dtype!r}: choose {', '.join(TEACHER_DTYPES)}")
    if not layers and not strides:
        raise ConfigError("A teacher needs --teacher-strides (e.g. 8,16,32) or --teacher-layers")
    if name in SEGMENTATION_TEACHERS:
        model, taps, mean, std, prov, run = _pspnet_teacher(name, weights, layers, seed)
    else:
        model, taps, mean, std, prov, run = _timm_teacher(name, weights, strides, layers, seed)
    if len({t.field for t in taps}) != len(taps):
        raise ConfigError(f"Teacher taps {[t.field for t in taps]} repeat a field: list each stride/layer once")
    for p in model.parameters():
        p.requires_grad_(False)
    untrained = prov["source"] == "untrained"  # identified by its recipe, as the coder's (weights.recipe_sha256)
    prov["sha256"] = (recipe_sha256({"untrained": name, "seed": seed}) if untrained
                      else state_dict_sha256(model.state_dict()))
    selection = {"layers": list(layers)} if layers else {"strides": list(strides)}
    return Teacher(name, model, taps, mean, std, prov, dtype, selection, run)


# --------------------------------------------------------------------------- manifest entry

def teacher_entry(teacher: Teacher | None, latent: dict) -> dict:
    """`latent` (a split's geometry entry) plus the teacher fingerprint at the split's unpadded crop size."""
    if teacher is None:
        return latent
    pad = latent["padding"]
    _, h, w = latent["latent_shape"]
    height = h * LATENT_STRIDE - pad["top"] - pad["bottom"]
    width = w * LATENT_STRIDE - pad["left"] - pad["right"]
    return {**latent, "teacher": teacher.fingerprint(height, width)}
