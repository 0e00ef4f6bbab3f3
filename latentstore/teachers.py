"""Teacher features for pixel-to-compressed knowledge transfer (docs/method.md §5), cached beside the latents.

A teacher is a frozen pixel-domain CNN. Its input is the very uint8 crop the
coder encoded (UNPADDED: padding is the coder's business), scaled to [0, 1]
and normalized with the teacher's own mean/std from its timm pretrained config.
Its outputs are picked by stride through timm's ``features_only`` FeatureInfo
(ResNet-50 at 224: 512x28x28, 1024x14x14, 2048x7x7 at strides 8, 16, 32), or
by module name (``layers``) for a segmentation backbone whose stages share one
stride (PSPNet-50 at output stride 8).

Each tap becomes one field, ``teacher_s<stride>`` or ``teacher_<layer>``, stored
as float16, bfloat16 (the uint16 bit pattern: numpy has no bfloat16) or int8
with a float32 scale per channel (``teacher_<tag>.scale``, symmetric, scale =
max|x| / 127). The teacher runs one image at a time: batched CPU convolutions
change float bits with the batch size (measured: ResNet-50 layer4 at batch 5
vs 1 differs by 1.5e-7, which flips float16 roundings), and a store's bytes
must not depend on --batch-size.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .coders import file_sha256, state_dict_sha256
from .encode import store_threads
from .errors import ConfigError, StoreError, WeightsError
from .format import LATENT_STRIDE, TEACHER_PREFIX, encode_npy
from .weights import check_file, hash_prefix, hf_cache_dir, hf_cached_file, offline_reason, torch_hub_file

TEACHER_DTYPES = ("float16", "bfloat16", "int8")
DEFAULT_STRIDES = (8, 16, 32)
SEGMENTATION_TEACHERS = {"pspnet50"}  # latentstore.models.PSPNet, layers by name, weights from a file
# What the manifest fingerprint must agree on for a trainer to accept a store (docs/reliability.md §7).
FINGERPRINT_KEYS = {"model": ("name",), "weights": ("weights_sha256",), "normalization": ("mean", "std"),
                    "taps": ("taps",)}


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
        with store_threads():  # the stored bits depend on the thread count (encode.STORE_THREADS)
            maps = self._run((x - mean) / std)
        return {t.field: m[0].float().numpy() for t, m in zip(self.taps, maps)}

    def sample_files(self, crop: np.ndarray) -> dict:
        """The tar members this teacher adds to one sample: {member suffix: bytes}."""
        files = {}
        for name, value in self.features(crop).items():
            for suffix, array in quantize(value, self.dtype).items():
                files[f"{name}{suffix}.npy"] = encode_npy(array)
        return files

    def fingerprint(self, height: int, width: int) -> dict:
        """The manifest entry: what a trainer checks (check_teacher) and the feature shapes at this crop."""
        feats = self.features(np.zeros((height, width, 3), np.uint8))
        return {"name": self.name, "weights": self.weights, "weights_sha256": self.weights["sha256"],
                "mean": list(self.mean), "std": list(self.std), "dtype": self.dtype,
                "input": "unpadded uint8 crop / 255, then (x - mean) / std per channel",
                **{k: list(v) for k, v in self.selection.items()},
                "taps": [{"field": t.field, "layer": t.layer, "stride": t.stride, "channels": t.channels}
                         for t in self.taps],
                "feature_shapes": {k: list(v.shape) for k, v in feats.items()}}


# --------------------------------------------------------------------------- storage dtypes

def quantize(x: np.ndarray, dtype: str) -> dict:
    """float32 [C,h,w] -> {"": stored array} (+ {".scale": float32 [C]} for int8)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "float16":
        return {"": x.astype(np.float16)}
    if dtype == "bfloat16":
        # torch rounds to nearest even; the uint16 bit pattern keeps the .npy readable by plain numpy.
        bits = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        return {"": bits.copy()}
    if dtype == "int8":
        scale = (np.abs(x).reshape(x.shape[0], -1).max(axis=1) / np.float32(127)).astype(np.float32)
        safe = np.where(scale > 0, scale, np.float32(1)).reshape(-1, *([1] * (x.ndim - 1)))
        q = np.clip(np.rint(x / safe), -127, 127).astype(np.int8)
        return {"": q, ".scale": scale}
    raise ConfigError(f"Invalid --teacher-dtype {dtype!r}: choose {', '.join(TEACHER_DTYPES)}")


def dequantize(stored: np.ndarray, dtype: str, scale: np.ndarray | None = None) -> np.ndarray:
    """The float32 features a stored array stands for (inverse of `quantize`, up to its rounding)."""
    if dtype == "float16":
        return stored.astype(np.float32)
    if dtype == "bfloat16":
        return (stored.astype(np.uint32) << 16).view(np.float32)
    if dtype == "int8":
        if scale is None:
            raise StoreError("int8 teacher features need their .scale member")
        return stored.astype(np.float32) * scale.astype(np.float32).reshape(-1, *([1] * (stored.ndim - 1)))
    raise StoreError(f"unknown teacher dtype {dtype!r} in the manifest")


def relative_error(x: np.ndarray, dtype: str) -> float:
    """‖dequantize(quantize(x)) − x‖₂ / ‖x‖₂: what storing `x` in `dtype` costs."""
    q = quantize(x, dtype)
    err = dequantize(q[""], dtype, q.get(".scale")) - x
    norm = float(np.linalg.norm(x))
    return float(np.linalg.norm(err)) / norm if norm else 0.0


# --------------------------------------------------------------------------- loading

def parse_list(value, cast=str) -> tuple:
    """"8,16,32" -> (8, 16, 32); tuples pass through."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    try:
        return tuple(cast(v) for v in (value or ()))
    except ValueError as exc:
        raise ConfigError(f"Could not read {value!r} as a comma-separated list: {exc}") from exc


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
    from .models.pspnet import BACKBONE, PSPNet
    import timm

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
    prov["sha256"] = state_dict_sha256(model.state_dict())
    selection = {"layers": list(layers)} if layers else {"strides": list(strides)}
    return Teacher(name, model, taps, mean, std, prov, dtype, selection, run)


# --------------------------------------------------------------------------- build and manifest side

#: BuildConfig fields that describe the teacher (kept out of the build identity when there is none).
TEACHER_ARGS = ("teacher", "teacher_weights", "teacher_strides", "teacher_layers", "teacher_dtype")


def resolve_teacher_args(strides, layers) -> dict:
    """Canonical teacher_strides/teacher_layers for BuildConfig: layers, when given, replace the strides."""
    layers = parse_list(layers)
    return {"teacher_layers": layers, "teacher_strides": () if layers else parse_list(strides, int)}


def teacher_entry(teacher: Teacher | None, latent: dict) -> dict:
    """`latent` (a split's geometry entry) plus the teacher fingerprint at the split's unpadded crop size."""
    if teacher is None:
        return latent
    pad = latent["padding"]
    _, h, w = latent["latent_shape"]
    height = h * LATENT_STRIDE - pad["top"] - pad["bottom"]
    width = w * LATENT_STRIDE - pad["left"] - pad["right"]
    return {**latent, "teacher": teacher.fingerprint(height, width)}


def teacher_entries(manifest: dict, split: str | None = None) -> dict:
    """{split: teacher fingerprint} for the splits (or the one split) that store teacher features."""
    splits = manifest["splits"] if split is None else {split: manifest["splits"][split]}
    return {s: e["teacher"] for s, e in splits.items() if e.get("teacher")}


def check_teacher(manifest: dict, expected, split: str | None = None) -> None:
    """Refuse a store whose teacher is not the one a trainer distils from (docs/reliability.md §7).

    `expected` is a fingerprint dict (``Teacher.fingerprint``) or a loaded Teacher.
    Compares model name, weights sha256, normalization (mean/std) and taps
    (strides or layers, in order); raises ConfigError naming every difference.
    """
    if isinstance(expected, Teacher):
        expected = {"name": expected.name, "weights_sha256": expected.weights["sha256"],
                    "mean": list(expected.mean), "std": list(expected.std),
                    "taps": [{"field": t.field, "layer": t.layer, "stride": t.stride, "channels": t.channels}
                             for t in expected.taps]}
    entries = teacher_entries(manifest, split)
    if not entries:
        raise ConfigError(f"The store has no teacher features{f' in split {split!r}' if split else ''}: "
                          f"build it with --teacher, or run `latentstore add-teacher`")
    for s, stored in entries.items():
        diffs = []
        for component, keys in FINGERPRINT_KEYS.items():
            for k in keys:
                have, want = stored.get(k), expected.get(k)
                if k in ("mean", "std") and have is not None and want is not None:
                    same = np.allclose(have, want, rtol=0, atol=1e-7)
                else:
                    same = have == want
                if not same:
                    diffs.append(f"{component} ({k}): store has {have!r}, expected {want!r}")
        if diffs:
            raise ConfigError(f"Split {s!r} holds features of another teacher:\n  " + "\n  ".join(diffs)
                              + "\nRebuild the teacher features (`latentstore add-teacher`) or distil from the "
                                "stored teacher.")


def summarize_teacher(split_entry: dict) -> dict | None:
    """For `info`: the split's teacher, its taps and the bytes per sample of each teacher field."""
    fp = split_entry.get("teacher")
    if not fp:
        return None
    per = split_entry.get("bytes_per_sample", {})
    fields = {t["field"]: sum(n for ext, n in per.items() if ext.split(".")[0] == t["field"]) for t in fp["taps"]}
    return {"name": fp["name"], "weights": fp["weights"], "dtype": fp["dtype"], "mean": fp["mean"],
            "std": fp["std"], "taps": fp["taps"], "feature_shapes": fp["feature_shapes"],
            "bytes_per_sample": fields, "total_bytes_per_sample": sum(fields.values())}


def render_teacher(t: dict | None, errors: dict | None = None) -> list:
    """`info` lines for summarize_teacher's dict (and teacher_error's, when measured)."""
    if t is None:
        return []
    w = t["weights"]
    weights = (f"UNTRAINED - {w['note']}" if not w["trained"]
               else w.get("hf_hub_id") or w.get("url") or w.get("path") or w["source"])
    lines = [f"  teacher   {t['name']} ({weights}), {t['dtype']}, sha256 {w['sha256'][:16]}...",
             f"            mean {t['mean']} std {t['std']}; {t['total_bytes_per_sample']:,.0f} bytes per sample"]
    for tap in t["taps"]:
        shape = "x".join(map(str, t["feature_shapes"][tap["field"]]))
        lines.append(f"    {tap['field']:<16} {tap['layer']:<10} stride {tap['stride']:<3} {shape:<14} "
                     f"{t['bytes_per_sample'][tap['field']]:>12,.0f} B")
    if errors:
        lines.append(f"  teacher relative error vs float32 ({errors['samples']} samples; stored {errors['dtype']}):")
        for dtype, per in errors["relative_error"].items():
            lines.append(f"    {dtype:<9} " + "  ".join(f"{f} {e:.2e}" for f, e in per.items()))
        worst = max(errors["stored_vs_live"].values(), default=0.0)
        lines.append(f"    stored vs live teacher (after {errors['dtype']} rounding): {worst:.2e}")
    return lines


class TeacherDecoder:
    """Reader side: turns a sample's stored teacher members into float tensors (dequantized)."""

    def __init__(self, split_entry: dict, fields=(), out_dtype: torch.dtype = torch.float32):
        fp = split_entry.get("teacher") or {}
        self.dtype = fp.get("dtype")
        self.fields = frozenset(t["field"] for t in fp.get("taps", ()))  # what the store holds
        self.requested = tuple(f for f in fields if f in self.fields)
        self.out_dtype = out_dtype

    def read_fields(self, fields: tuple) -> tuple:
        """The members to read for `fields`: int8 fields bring their .scale."""
        return tuple(fields) + tuple(f + ".scale" for f in self.requested if self.dtype == "int8")

    def decode(self, sample: dict) -> dict:
        for name in self.requested:
            if name not in sample:
                raise StoreError(f"shard {sample.get('__shard__')}, key {sample.get('__key__')}: "
                                 f"missing teacher field {name}")
            scale = sample.pop(name + ".scale", None)
            if self.dtype == "int8" and scale is None:
                raise StoreError(f"shard {sample.get('__shard__')}, key {sample.get('__key__')}: "
                                 f"{name} has no {name}.scale member")
            sample[name] = torch.from_numpy(dequantize(sample[name], self.dtype, scale)).to(self.out_dtype)
        return sample
