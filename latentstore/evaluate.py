"""Evaluate a trained checkpoint on a stored split: top-1/top-5 or mIoU, and the real bpp.

The flow is the one a reviewer of the paper's tables would check:

1. ``read_checkpoint`` loads the trainer's checkpoint (``weights_only=True``)
   and ``check_compatible`` refuses it, naming the field, when the store was
   encoded with another coder, quality, weights or latent shape, or labels
   other classes, than the store the model was trained on.
2. ``eval_batches`` reads every sample of one variant of the split exactly
   once: the variant's shards are dealt to the ranks (shard i to rank i mod W)
   and to DataLoader workers, with strict reads. Unlike training, no sample is
   dropped or repeated to even out ranks: metrics are integer counts that are
   summed once at the end (``latentstore.metrics``), so uneven ranks cost
   nothing and the result equals a single-process run exactly.
3. bpp is the size of the stored bitstrings, 8·(len(y_string)+len(z_string))
   bits per unpadded pixel, summed over the samples; each sample is checked
   against its meta.json ``bits``, and the total against the manifest's
   ``mean_bpp`` when the whole split was read.

``evaluate_classification`` / ``evaluate_segmentation`` return the eval record
written to ``eval.json`` (docs/results.md describes it).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .checkpoint_view import CheckpointView, read_checkpoint
from .errors import ConfigError, LatentstoreError, StoreError
from .format import read_manifest
from .metrics import IGNORE_INDEX, ConfusionMatrix, TopK, all_reduce_sum
from .dataset import SOURCES, collate, pick_split, to_tensors

RECORD_KIND, RECORD_VERSION = "latentstore-eval", 1


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


# --------------------------------------------------------------------------- sanity

def store_summary(manifest: dict, split: str) -> dict:
    """The facts of a store split a model depends on (what ``check_compatible`` compares)."""
    info = manifest["splits"][split]
    coder = manifest["coder"]
    classes = list(info.get("classes") or [])
    return {"coder": coder["name"], "quality": coder["quality"], "latent_kind": coder.get("latent_kind"),
            "channels": coder.get("channels"), "weights_sha256": coder.get("weights", {}).get("sha256"),
            "latent_shape": list(info["latent_shape"]), "num_classes": len(classes), "classes": classes}


def check_compatible(trained_on: dict, store: dict, task: str) -> None:
    """Refuse evaluation when the checkpoint's training store and this store disagree; name each field.

    ``trained_on`` and ``store`` are ``store_summary`` dicts. Segmentation
    models are fully convolutional and evaluate on whole images, so for them
    only the channel count of ``latent_shape`` must agree (train crops are
    C×40×40, val images C×64×128); classification compares the whole shape.
    Fields the checkpoint does not record are not compared.
    """
    diffs = []
    for name in ("coder", "quality", "latent_kind", "channels", "weights_sha256", "latent_shape",
                 "num_classes", "classes"):
        want, got = trained_on.get(name), store.get(name)
        if want is None or got is None:
            continue
        if name == "latent_shape":
            want, got = list(want), list(got)
            if task == "segmentation":
                want, got, name = want[:1], got[:1], "latent_shape[0] (channels)"
        if name == "classes" and want != got:
            extra = f" ({len(want)} vs {len(got)} classes)" if len(want) != len(got) else " (other names/order)"
            diffs.append(f"classes: the checkpoint was trained on other classes than the store labels{extra}")
        elif want != got:
            diffs.append(f"{name}: checkpoint {_short(want)}, store {_short(got)}")
    if diffs:
        raise StoreError("The checkpoint does not match the store it would be evaluated on:\n  "
                         + "\n  ".join(diffs) + "\nEvaluate on a store built with the training store's coder, "
                         "quality and weights (see `latentstore info`), or use a matching checkpoint.")


def _short(value):
    return value[:12] + "…" if isinstance(value, str) and len(value) > 16 else value


def build_model(ckpt: CheckpointView, manifest: dict, split: str, device: str = "cpu") -> torch.nn.Module:
    """The checkpoint's model, for this store's latent channels, with its trained weights (strict load)."""
    from .coders import load_coder
    from .models import create_model

    channels = manifest["splits"][split]["latent_shape"][0]
    coder = None
    if ckpt.model_name.startswith("decode+"):
        # Architecture only: g_s's trained weights come with the checkpoint's state dict.
        c = manifest["coder"]
        coder = load_coder(c["name"], c["quality"], "untrained").model
    model = create_model(ckpt.model_name, channels, ckpt.num_classes, coder=coder)
    missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise StoreError(f"checkpoint {ckpt.path} does not fit model {ckpt.model_name} "
                         f"({channels} latent channels, {ckpt.num_classes} classes): missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.to(device).eval()


# --------------------------------------------------------------------------- reading

class _EvalSamples(IterableDataset):
    """Collated batches of the given shards; DataLoader worker w reads shards w, w+n, ..."""

    def __init__(self, store: Path, backend: str, shards: list, fields: tuple, batch_size: int):
        self.store, self.source, self.shards = store, SOURCES[backend], shards
        self.fields, self.batch_size = fields, batch_size

    def __iter__(self):
        worker = get_worker_info()
        wid, n = (worker.id, worker.num_workers) if worker else (0, 1)
        batch = []
        for shard in self.shards[wid::n]:
            for sample in self.source(self.store, shard, self.fields, False):
                batch.append(to_tensors(sample))
                if len(batch) == self.batch_size:
                    yield collate(batch)
                    batch = []
        if batch:
            yield collate(batch)


def rank_and_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def eval_batches(store, manifest: dict, split: str, variant: int, fields: tuple, batch_size: int,
                 workers: int = 0, rank: int = 0, world: int = 1, pin_memory: bool = False):
    """This rank's batches of variant ``variant``: every sample of the variant on exactly one rank."""
    info = manifest["splits"][split]
    if not 0 <= variant < info["variants"]:
        raise ConfigError(f"--variant {variant} out of range: split {split!r} stores {info['variants']}")
    shards = [s for s in info["shards"] if s["variant"] == variant][rank::world]
    data = _EvalSamples(Path(store), manifest.get("backend", "webdataset"), shards, fields, batch_size)
    return DataLoader(data, batch_size=None, num_workers=workers, pin_memory=pin_memory)


def _progress(batches, cfg: EvalConfig, manifest: dict, split: str, rank: int, world: int):
    """`batches`, with a bar on rank 0 counting this rank's samples of the variant."""
    from tqdm import tqdm

    shards = [s for s in manifest["splits"][split]["shards"] if s["variant"] == cfg.variant][rank::world]
    with tqdm(total=sum(s["samples"] for s in shards), unit="sample", desc=f"eval {split}", dynamic_ncols=True,
              disable=not cfg.progress or rank != 0) as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch["__key__"]))


class BitCounter:
    """Exact rate: int64 [bits, unpadded pixels, samples], each sample checked against its meta.json."""

    def __init__(self):
        self.counts = torch.zeros(3, dtype=torch.int64)

    def update(self, batch: dict) -> None:
        z_strings = batch.get("z_string") or [b""] * len(batch["y_string"])
        for key, shard, meta, y, z in zip(batch["__key__"], batch["__shard__"], batch["meta"],
                                          batch["y_string"], z_strings):
            bits = 8 * (len(y) + len(z))
            if bits != meta["bits"]:
                raise StoreError(f"shard {shard}, key {key}: bitstrings hold {bits} bits, meta.json records "
                                 f"{meta['bits']}; run `latentstore verify`")
            h, w = meta["image_size"]
            self.counts += torch.tensor([bits, h * w, 1])

    def all_reduce(self) -> "BitCounter":
        all_reduce_sum(self.counts)
        return self

    def summary(self) -> dict:
        bits, pixels, samples = (int(v) for v in self.counts)
        return {"bpp": bits / pixels if pixels else None, "bits": bits, "pixels": pixels, "samples": samples}


def _check_rate(rate: dict, manifest: dict, split: str, variant: int) -> dict:
    """Every sample of the variant was read once; with one variant, bpp equals the manifest's mean_bpp."""
    info = manifest["splits"][split]
    expected = sum(s["samples"] for s in info["shards"] if s["variant"] == variant)
    if rate["samples"] != expected:
        raise StoreError(f"read {rate['samples']} samples of variant {variant}, the manifest records {expected}")
    check = {"manifest_mean_bpp": info.get("mean_bpp"), "matches_manifest": None}
    if info["variants"] == 1 and info.get("mean_bpp") is not None and rate["bpp"] is not None:
        check["matches_manifest"] = math.isclose(rate["bpp"], info["mean_bpp"], rel_tol=1e-12)
        if not check["matches_manifest"]:
            raise StoreError(f"bpp from the stored bitstrings is {rate['bpp']!r}, the manifest says "
                             f"{info['mean_bpp']!r}: the store disagrees with itself; run `latentstore verify`")
    return check


# --------------------------------------------------------------------------- evaluation

def _inputs(batch: dict, fields: tuple, region, device: str) -> list:
    """The model's inputs, cropped to the split's valid latent region exactly as the trainers crop them."""
    from .train.model import model_inputs

    missing = [f for f in fields if f not in batch]
    if missing:
        raise StoreError(f"shard {batch['__shard__'][0]}: no {', '.join(missing)} field; the model needs it "
                         "(σ̂: build the store with --fields scales)")
    return model_inputs(batch, fields, region, device)


def _on_cuda(cfg: EvalConfig) -> bool:
    return torch.device(cfg.device).type == "cuda"


def _forward(model, batch: dict, inputs: tuple, region, cfg: EvalConfig) -> torch.Tensor:
    """The model's logits of one batch, in cfg.precision (float32 logits whatever it ran in)."""
    from .train.speed import autocast, autocast_dtype

    kind = torch.device(cfg.device).type
    with autocast(kind, autocast_dtype(cfg.precision, kind)):
        return model(*_inputs(batch, inputs, region, cfg.device)).float()


def _prepare(cfg: EvalConfig, task: str):
    manifest = read_manifest(cfg.store)
    split = pick_split(manifest, cfg.split, cfg.store)
    ckpt = read_checkpoint(cfg.checkpoint)
    if ckpt.task and ckpt.task != task:
        raise ConfigError(f"{cfg.checkpoint} is a {ckpt.task} checkpoint ({ckpt.model_name}); "
                          f"use eval/{'segment' if ckpt.task == 'segmentation' else 'classify'}.py")
    check_compatible(ckpt.trained_on, store_summary(manifest, split), task)
    model = build_model(ckpt, manifest, split, cfg.device)
    from .train.speed import prepare_model

    prepare_model(model, cfg.precision, torch.device(cfg.device))
    if model.task != task:
        raise ConfigError(f"{ckpt.model_name} is a {model.task} model; this is the {task} eval")
    from .train.model import input_fields, valid_crop

    inputs = input_fields(ckpt.model_name)  # refuses pixel-domain models
    region = valid_crop(manifest["splits"][split])
    fields = tuple(dict.fromkeys(inputs + ("label", "meta", "y_string", "z_string")))
    return manifest, split, ckpt, model, fields, inputs, region


@torch.no_grad()
def evaluate_classification(cfg: EvalConfig) -> dict:
    """Top-1/top-5 (percent) and bpp of a classification checkpoint on one stored split."""
    start = time.perf_counter()
    manifest, split, ckpt, model, fields, inputs, region = _prepare(cfg, "classification")
    rank, world = rank_and_world()
    acc, rate = TopK((1, 5)), BitCounter()
    for batch in _progress(eval_batches(cfg.store, manifest, split, cfg.variant, fields, cfg.batch_size,
                                        cfg.workers, rank, world, pin_memory=_on_cuda(cfg)),
                           cfg, manifest, split, rank, world):
        logits = _forward(model, batch, inputs, region, cfg)
        acc.update(logits, batch["label"])
        rate.update(batch)
    acc.all_reduce()
    rate.all_reduce()
    metrics = {**acc.compute(), "correct": acc.correct(), "num_classes": ckpt.num_classes}
    return _record(cfg, "classification", manifest, split, ckpt, model, metrics, rate, world, start)


@torch.no_grad()
def evaluate_segmentation(cfg: EvalConfig) -> dict:
    """mIoU (percent) over the classes, per-class IoU and bpp of a segmentation checkpoint."""
    start = time.perf_counter()
    manifest, split, ckpt, model, fields, inputs, region = _prepare(cfg, "segmentation")
    fields += ("label_map",)
    classes = manifest["splits"][split].get("classes") or [str(i) for i in range(ckpt.num_classes)]
    rank, world = rank_and_world()
    cm, rate = ConfusionMatrix(ckpt.num_classes, IGNORE_INDEX), BitCounter()
    for batch in _progress(eval_batches(cfg.store, manifest, split, cfg.variant, fields, cfg.batch_size,
                                        cfg.workers, rank, world, pin_memory=_on_cuda(cfg)),
                           cfg, manifest, split, rank, world):
        if "label_map" not in batch:
            raise StoreError(f"shard {batch['__shard__'][0]}: no label_map field; is this a segmentation store?")
        logits = _forward(model, batch, inputs, region, cfg)
        for i, meta in enumerate(batch["meta"]):
            cm.update(predict_labels(logits[i], meta, region), batch["label_map"][i])
        rate.update(batch)
    cm.all_reduce()
    rate.all_reduce()
    iou = cm.iou()
    metrics = {"miou": 100 * cm.miou(), "pixel_accuracy": 100 * cm.pixel_accuracy(),
               "classes": list(classes),  # class order (JSON objects are written with sorted keys)
               "per_class_iou": {name: (None if math.isnan(v) else 100 * float(v)) for name, v in zip(classes, iou)},
               "labeled_pixels": cm.pixels, "num_classes": ckpt.num_classes,
               "confusion_matrix": cm.matrix.tolist(), "samples": int(rate.counts[2])}
    return _record(cfg, "segmentation", manifest, split, ckpt, model, metrics, rate, world, start)


def predict_labels(logits: torch.Tensor, meta: dict, region=None) -> torch.Tensor:
    """Class map at label resolution from one sample's logits [K, h, w].

    The model saw latent cells ``region`` = (row0, row1, col0, col1) of the
    padded input (the valid region; None = all), i.e. padded pixels
    [16·row0, 16·row1) × [16·col0, 16·col1). Logits are bilinearly upsampled to
    that pixel size when the model returns them smaller, then the zero padding
    left in it is cut away, leaving exactly the unpadded image, which is the
    label map's size. Argmax comes last, so scores are interpolated, not labels.
    """
    pad, (h, w) = meta["padding"], meta["image_size"]
    if region is None:
        region = (0, (pad["top"] + h + pad["bottom"]) // 16, 0, (pad["left"] + w + pad["right"]) // 16)
    r0, r1, c0, c1 = region
    size = (16 * (r1 - r0), 16 * (c1 - c0))
    top, left = pad["top"] - 16 * r0, pad["left"] - 16 * c0
    if top < 0 or left < 0 or top + h > size[0] or left + w > size[1]:
        raise StoreError(f"key {meta['key']}: its image ({h}×{w}, padding {pad}) lies outside the latent region "
                         f"{list(region)} the model sees; the split's valid_region does not cover this sample")
    if tuple(logits.shape[-2:]) != size:
        logits = F.interpolate(logits[None].float(), size, mode="bilinear", align_corners=False)[0]
    return logits[:, top:top + h, left:left + w].argmax(0).cpu()


def _record(cfg, task, manifest, split, ckpt, model, metrics, rate, world, start) -> dict:
    from .report import method_label

    rate_summary = rate.summary()
    check = _check_rate(rate_summary, manifest, split, cfg.variant)
    coder = manifest["coder"]
    record = {
        "kind": RECORD_KIND, "version": RECORD_VERSION, "task": task,
        "method": cfg.method or method_label(ckpt.model_name, ckpt.transfer),
        "model": ckpt.model_name, "transfer": ckpt.transfer,
        "coder": coder["name"], "quality": coder["quality"],
        "coder_weights": {k: coder["weights"].get(k) for k in ("source", "trained", "sha256")},
        **{k: v for k, v in rate_summary.items() if k != "samples"}, **check, **metrics,
        "store": {"path": str(Path(cfg.store).resolve()), "split": split, "variant": cfg.variant,
                  "latent_shape": manifest["splits"][split]["latent_shape"]},
        "checkpoint": {"path": str(Path(cfg.checkpoint).resolve()), "sha256": ckpt.sha256,
                       "step": ckpt.step, "epoch": ckpt.epoch},
        "world_size": world, "device": cfg.device, "seconds": round(time.perf_counter() - start, 3),
    }
    if cfg.complexity:
        c, _, _ = manifest["splits"][split]["latent_shape"]
        r0, r1, c0, c1 = manifest["splits"][split]["valid_region"]  # what the model sees (trainers crop so)
        record["complexity"] = measure_complexity(model, (c, r1 - r0, c1 - c0))
    return record


def measure_complexity(model, latent_shape) -> dict:
    """Params, MACs and latency of ``model`` on one ŷ of ``latent_shape`` (latentstore.complexity)."""
    from .complexity import measure

    from .report import complexity_row

    return complexity_row(measure(model.registry_name, model.cpu(), tuple(latent_shape)))


# --------------------------------------------------------------------------- scripts

def parse_args(argv, task: str) -> EvalConfig:
    """eval/classify.py and eval/segment.py flags -> EvalConfig (argparse exits on an unknown flag)."""
    import argparse

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


def write_outputs(record: dict, out: Path) -> str:
    """eval.json (atomically) and eval.md (the Markdown row) beside it; returns the Markdown."""
    from .format import write_json_atomic
    from .report import markdown_row, per_class_table

    write_json_atomic(out, record)
    md = markdown_row(record)
    if record["task"] == "segmentation":
        md += "\n\n" + per_class_table(record)
    out.with_suffix(".md").write_text(md + "\n")
    return md


def summary(record: dict, out: Path) -> str:
    """The end of an eval: its headline numbers, and the files it wrote."""
    if record["task"] == "classification":
        numbers = f"top-1 {record['top1']:.2f} %, top-5 {record['top5']:.2f} %"
    else:
        numbers = f"mIoU {record['miou']:.2f} %, pixel accuracy {record['pixel_accuracy']:.2f} %"
    bpp = "-" if record["bpp"] is None else f"{record['bpp']:.4f}"
    return (f"{record['method']}: {numbers}, {bpp} bpp on {record['samples']} samples "
            f"(split {record['store']['split']}, variant {record['store']['variant']}, {record['seconds']:.1f} s)\n"
            f"wrote {out} and {out.with_suffix('.md')}")


def run(cfg: EvalConfig, task: str) -> dict:
    """Evaluate, and on rank 0 write eval.json + eval.md; every rank returns the (reduced) record.

    Under torchrun the process group is joined with the trainers' ``setup``
    (nccl on CUDA, gloo on CPU) and left again at the end.
    """
    from .train.ddp import cleanup, setup

    d = setup(cfg.device)
    try:
        cfg = replace(cfg, device=str(d.device))
        record = (evaluate_classification if task == "classification" else evaluate_segmentation)(cfg)
        if d.main:
            md = write_outputs(record, cfg.out_path())
            print(md)
            print(summary(record, cfg.out_path()))
    finally:
        cleanup()
    return record


def main(argv, task: str) -> int:
    """Entry point of eval/classify.py and eval/segment.py: user errors print one line, exit 2."""
    cfg = parse_args(argv, task)
    try:
        run(cfg, task)
    except LatentstoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
