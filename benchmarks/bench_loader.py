"""Loader benchmark (issue 7): samples/s delivered to the training step, in one run, on the same images.

    python benchmarks/bench_loader.py            # 256 images, full figures (store built once, then reused)
    python benchmarks/bench_loader.py --quick    # 64 images, fewer on-the-fly samples and training steps

Data: a synthetic ImageFolder of ``--images`` JPEGs (quality 90, about
ImageNet's typical 500 px long side) cut from the bundled demo photos
(latentstore/data/demo-imagenet, train and val: 6 photos) with a seeded random
crop, resize, flip and brightness change, one class per source photo. The
bundled set alone (4 train photos) cannot fill a batch of 32 within one epoch
(epoch e reads variant e mod K, 4 samples), hence the distinct files. Every
pipeline below reads these same files; the store is built from them with
cheng2020-anchor q3, untrained (seeded) weights, 224 crops (padded to 256,
ŷ 128x16x16 float16), one variant, ``--shard-size`` images per shard.

Measured, side by side:
  store       open_store(fields=y_hat,label, shuffle=True, batch_size=32) + DataLoader(batch_size=None),
              0 and 2 workers: what latentstore.train.fit feeds the step (ready tensors)
  on-the-fly  read JPEG, RandomResizedCrop + flip (latentstore.build.augment), Encoder.encode -> ŷ
              (the batched exact encoder, faster than per-image compress(); the fair floor)
  pixels      torchvision ImageFolder + RandomResizedCrop(224) + flip + ToTensor, same DataLoader settings
  raw read    the shard files read sequentially in 8 MiB blocks, bytes/s and samples/s; once
              right after posix_fadvise(DONTNEED) (cold-ish: evicts this file's clean pages from the
              page cache, no root needed) and once warm (page cache)
  data wait   train/classify.py (the real trainer, in process) on the store, ResNet-50-aa, batch 32,
              CPU, --log-every 1: its metrics.csv data_wait = time in next(batch) / step time

Building the store (N exact encodes, torch at 1 thread: ~2.5 min for 256 on
2 loaded cores) dominates a first run; it is cached in ``--work`` and reused
when the images and the build arguments are unchanged. The on-the-fly encoder
also runs at 1 thread, its fastest setting here (the encoder section of
docs/benchmarks.md); the other pipelines use torch's defaults.
Timings are wall clock and best-of ``--repeats`` passes: other jobs on a shared
machine slow every pipeline, and the load average is printed.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import portable  # noqa: F401  (first: the portable numerics pins, before torch loads)
import numpy as np
from PIL import Image, ImageEnhance
import torch
from torch.utils.data import DataLoader, Dataset

import latentstore
from latentstore.build.augment import apply, sample_params
from latentstore.build.run import BuildConfig, build
from latentstore.build.encoder import to_input
from latentstore.coders.registry import load_coder
from latentstore.build.encoder import Encoder
from latentstore.store.format import read_manifest
from latentstore.read.dataset import open_store

DEMO = Path(latentstore.__file__).parent / "data" / "demo-imagenet"
REPO = Path(__file__).resolve().parents[1]
CODER, QUALITY, CROP, BATCH = "cheng2020-anchor", 3, 224, 32
TARGETS = {"store / on-the-fly": 100.0, "store / pixels": 3.0, "store / raw read": 0.30}
DATA_WAIT_TARGET = 0.05


# --------------------------------------------------------------------------- data

def make_images(root: Path, n: int, seed: int = 0) -> Path:
    """n JPEGs in root/train/<photo>/, cut from the demo photos; deterministic, so the store cache holds."""
    split = root / "train"
    stamp = root / "images.json"
    spec = {"n": n, "seed": seed, "version": 1}
    if stamp.is_file() and json.loads(stamp.read_text()) == spec:
        return split
    shutil.rmtree(root, ignore_errors=True)
    photos = sorted(DEMO.rglob("*.JPEG"))
    rng = np.random.default_rng(seed)
    for i in range(n):
        src = photos[i % len(photos)]
        img = Image.open(src).convert("RGB")
        w, h = img.size
        aspect = rng.uniform(0.66, 0.8)   # short/long side, like most ImageNet photos
        s = rng.uniform(0.6, 1.0)
        cw = int(min(w, h / aspect) * s)
        ch = int(cw * aspect)
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        size = (500, round(500 * aspect)) if rng.random() < 0.75 else (round(500 * aspect), 500)
        box = (left, top, left + cw, top + ch) if size[0] >= size[1] else (left, top, left + ch, top + cw)
        box = (box[0], box[1], min(box[2], w), min(box[3], h))
        out = img.resize(size, Image.BICUBIC, box=box)
        if rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.8, 1.2))
        folder = split / src.stem.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        out.save(folder / f"img_{i:05d}.jpg", quality=90)
    stamp.write_text(json.dumps(spec))
    return split


def build_store(work: Path, images_root: Path, shard_size: int) -> tuple[Path, float | None]:
    """The benchmark store (reused if complete with the same arguments); returns (path, build seconds or None)."""
    cfg = BuildConfig(coder=CODER, quality=QUALITY, weights="untrained", dataset="imagefolder",
                      root=str(images_root), split="train", out=str(work / "store"), variants=1,
                      crop=CROP, shard_size=shard_size, batch_size=8, workers=0)
    store = Path(cfg.out)
    if (store / "manifest.json").is_file():
        m = read_manifest(store)
        built = m["splits"]["train"]
        same = {k: built["config"].get(k) for k in ("shard_size", "root", "crop", "coder")} == \
            {"shard_size": shard_size, "root": str(images_root.resolve()), "crop": CROP, "coder": CODER}
        if same and built["samples"] == sum(1 for _ in images_root.rglob("*.jpg")):
            return store, None
        shutil.rmtree(store)
    t = time.perf_counter()
    with one_thread():
        build(cfg, progress=True)
    return store, time.perf_counter() - t


class one_thread:
    """torch at 1 thread inside the block: the coder's autoregressive loop is a long series of tiny ops,
    and with more runnable threads than cores OpenMP spin-waits make it ~10x slower (docs/benchmarks.md,
    encoder section). Speed only: a store's bytes do not depend on it."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def add_teacher_copy(store: Path, work: Path) -> tuple[Path, tuple, float | None]:
    """A copy of the store with untrained ResNet-50 teacher maps (strides 8/16/32, float16) beside ŷ."""
    from latentstore.commands.add_teacher import add_teacher

    copy = work / "store-teacher"
    built = None
    if not (copy / "manifest.json").is_file() or "teacher" not in read_manifest(copy)["splits"]["train"]:
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(store, copy)
        t = time.perf_counter()
        add_teacher(copy, "resnet50", weights="untrained", verify_sources=False, progress=True)
        built = time.perf_counter() - t
    taps = read_manifest(copy)["splits"]["train"]["teacher"]["taps"]
    return copy, tuple(t["field"] for t in taps), built


# --------------------------------------------------------------------------- pipelines

def timed_passes(make_iter, repeats: int) -> dict:
    """Best-of-`repeats` full passes: samples/s from iterator creation (worker start included) to the last
    batch, plus the time to the first batch (worker start + first read)."""
    best = None
    for r in range(repeats):
        t0 = time.perf_counter()
        n, first, n_first = 0, None, 0
        for batch in make_iter(r):
            n += batch_len(batch)
            if first is None:
                first, n_first = time.perf_counter() - t0, n
        dt = time.perf_counter() - t0
        if best is None or dt < best["seconds"]:
            best = {"samples": n, "seconds": dt, "first_batch_s": first,
                    # after the first batch: what a long epoch approaches once workers run
                    "steady_samples_per_s": (n - n_first) / max(dt - first, 1e-9)}
    best["samples_per_s"] = best["samples"] / best["seconds"]
    return best


def batch_len(batch) -> int:
    if isinstance(batch, dict):
        return len(batch["label"])
    return len(batch[-1])


def bench_store(store: Path, workers: int, repeats: int, fields=("y_hat", "label")) -> dict:
    ds = open_store(store, "train", fields=fields, seed=0, shuffle=True, batch_size=BATCH, drop_last=True)

    def passes(r):
        ds.set_epoch(r)   # one variant: the same shards, a new order each pass, as epochs would
        return DataLoader(ds, batch_size=None, num_workers=workers)
    return timed_passes(passes, repeats)


def bench_pixels(images_root: Path, workers: int, repeats: int) -> dict:
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.RandomResizedCrop(CROP), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor()])
    ds = datasets.ImageFolder(str(images_root), transform=tf)

    def passes(r):
        return DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True,
                          generator=torch.Generator().manual_seed(r))
    return timed_passes(passes, repeats)


class CropDataset(Dataset):
    """JPEG -> RandomResizedCrop + flip with latentstore.build.augment (as a build does) -> uint8 HxWx3."""

    def __init__(self, paths, seed: int = 0):
        self.paths, self.seed = paths, seed

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from latentstore.build.images import load_rgb

        img = load_rgb(self.paths[i])
        params = sample_params(np.random.default_rng([self.seed, i]), img.size, "train", crop=CROP)
        return np.asarray(apply(img, params), dtype=np.uint8)


def bench_on_the_fly(images_root: Path, samples: int, batch: int) -> dict:
    """The pipeline a store replaces: decode + augment in the loader, the exact encoder in the step."""
    paths = sorted(str(p) for p in images_root.rglob("*.jpg"))[:samples]
    encoder = Encoder(load_coder(CODER, QUALITY, "untrained"))
    loader = DataLoader(CropDataset(paths), batch_size=batch, num_workers=0, collate_fn=list)
    t0 = time.perf_counter()
    n = 0
    with one_thread():   # its fastest setting here: the ratio to the store stays conservative
        for crops in loader:
            x, _ = to_input(crops)
            y_hats = [e.y_hat for e in encoder.encode(x)]
            n += len(y_hats)
    dt = time.perf_counter() - t0
    return {"samples": n, "seconds": dt, "samples_per_s": n / dt, "batch": batch}


def raw_read(store: Path, cold: bool, block: int = 8 << 20) -> dict:
    """Read every shard file of the split sequentially; cold: drop its cached pages first (fadvise)."""
    info = read_manifest(store)["splits"]["train"]
    files = [store / s["path"] for s in info["shards"]]
    if cold:
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            os.fsync(fd)   # DONTNEED drops clean pages only
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
    total = 0
    t0 = time.perf_counter()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while chunk := fh.read(block):
                total += len(chunk)
    dt = time.perf_counter() - t0
    samples = sum(s["samples"] for s in info["shards"])
    return {"bytes": total, "seconds": dt, "bytes_per_s": total / dt, "samples_per_s": samples / dt,
            "bytes_per_sample": total / samples}


def data_wait(store: Path, work: Path, steps: int, workers: int) -> dict:
    """Run train/classify.py in process (ResNet-50-aa, batch 32, CPU) and read its metrics.csv."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("classify", REPO / "train" / "classify.py")
    classify = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = classify   # its dataclasses look their module up there
    spec.loader.exec_module(classify)
    out = work / "run-data-wait"
    per_epoch = read_manifest(store)["splits"]["train"]["samples"] // BATCH   # epochs enough for `steps`
    shutil.rmtree(out, ignore_errors=True)
    argv = ["--store", str(store), "--out", str(out), "--model", "resnet50-aa", "--batch-size", str(BATCH),
            "--epochs", str(-(-steps // per_epoch)), "--max-steps", str(steps), "--log-every", "1", "--save-every", "1000000",
            "--workers", str(workers), "--device", "cpu", "--resume", "never", "--no-progress"]
    t0 = time.perf_counter()
    classify.main(argv)
    total = time.perf_counter() - t0
    rows = {}
    with open(out / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            rows.setdefault(int(row["step"]), {})[row["name"]] = float(row["value"])
    waits = [rows[s]["data_wait"] for s in sorted(rows)]
    # samples/s per step -> step seconds, to weight each step's wait fraction by its length
    secs = [BATCH / rows[s]["samples_per_s"] for s in sorted(rows)]
    later = list(zip(waits[1:], secs[1:]))
    shutil.rmtree(out, ignore_errors=True)   # a ResNet-50 checkpoint: ~300 MB
    return {"per_step": waits, "step_s": secs, "command_s": total, "workers": workers,
            "all": sum(w * s for w, s in zip(waits, secs)) / sum(secs),
            "after_first": (sum(w * s for w, s in later) / sum(s for _, s in later)) if later else None}


# --------------------------------------------------------------------------- report

def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.node()}: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


def ratio_line(name: str, value: float) -> str:
    target = TARGETS[name]
    verdict = "meets" if value >= target else "SHORT of"
    shown = f"{value:.1%}" if target < 1 else f"{value:,.1f}x"
    want = f"{target:.0%}" if target < 1 else f"{target:g}x"
    return f"  {name:<24} {shown:>10}   {verdict} target >= {want}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 images, 8 on-the-fly samples, 3 training steps")
    ap.add_argument("--images", type=int, help="synthetic JPEGs (default 256; --quick 64)")
    ap.add_argument("--shard-size", type=int, default=64, help="images per shard of the store")
    ap.add_argument("--otf-samples", type=int, help="samples through the on-the-fly pipeline (default 16; quick 8)")
    ap.add_argument("--train-steps", type=int, help="ResNet-50-aa steps for the data-wait figure (default 4; quick 3)")
    ap.add_argument("--train-workers", type=int, default=2, help="DataLoader workers of the training run")
    ap.add_argument("--workers", default="0,2", help="DataLoader worker counts for store and pixel pipelines")
    ap.add_argument("--repeats", type=int, default=3, help="passes per loader setting; the fastest is reported")
    ap.add_argument("--teacher", action="store_true",
                    help="also stream ŷ + label + ResNet-50 teacher maps (adds them to a copy of the store once)")
    ap.add_argument("--work", default="/tmp/latentstore-bench-loader", help="images, store and run folder (cached)")
    ap.add_argument("--json", help="also write all figures to this JSON file")
    args = ap.parse_args(argv)
    n = args.images or (64 if args.quick else 256)
    otf = args.otf_samples or (8 if args.quick else 16)
    steps = args.train_steps or (3 if args.quick else 4)
    workers = [int(w) for w in args.workers.split(",")]
    work = Path(args.work) / f"n{n}"
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine   {machine()}")
    t_start = time.perf_counter()

    images = make_images(work / "images", n)
    jpeg_bytes = [p.stat().st_size for p in images.rglob("*.jpg")]
    print(f"images    {len(jpeg_bytes)} JPEGs in {images}, mean {np.mean(jpeg_bytes) / 1e3:.0f} kB")
    store, build_s = build_store(work, images.parent, args.shard_size)
    print(f"store     {store}" + (f" (built now in {build_s:.0f} s: {n / build_s:.2f} samples/s)" if build_s
                                  else " (reused)"))
    res: dict = {"machine": machine(), "images": n, "mean_jpeg_bytes": float(np.mean(jpeg_bytes)),
                 "build_s": build_s, "store": {}, "pixels": {}}

    cold = raw_read(store, cold=True)
    warm = raw_read(store, cold=False)
    res["raw_cold"], res["raw_warm"] = cold, warm
    for w in workers:
        res["store"][w] = bench_store(store, w, args.repeats)
        res["pixels"][w] = bench_pixels(images, w, args.repeats)
    if args.teacher:
        tstore, tfields, tbuilt = add_teacher_copy(store, work)
        res["teacher_fields"], res["teacher_build_s"] = tfields, tbuilt
        res["store_teacher"] = {w: bench_store(tstore, w, args.repeats, ("y_hat", "label") + tfields)
                                for w in workers}
        res["raw_teacher_warm"] = raw_read(tstore, cold=False)
    res["on_the_fly"] = bench_on_the_fly(images, otf, min(otf, 16))
    res["data_wait"] = data_wait(store, work, steps, args.train_workers)
    res["machine_after"] = machine()
    res["total_s"] = time.perf_counter() - t_start

    print(render(res, workers, otf))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    return 0


def render(res: dict, workers: list, otf: int) -> str:
    out = ["", f"samples/s delivered to the training step (batch {BATCH}, best of passes incl. worker start; "
               f"cheng2020-anchor q3 untrained, {CROP} crops, {res['images']} images):",
           f"  {'pipeline':<42} {'samples/s':>10} {'first batch s':>14} {'after 1st batch/s':>18}"]
    for w in workers:
        s = res["store"][w]
        out.append(f"  {'store ŷ+label, ' + str(w) + ' workers':<42} {s['samples_per_s']:>10,.0f} "
                   f"{s['first_batch_s']:>14.3f}{s['steady_samples_per_s']:>18,.0f}")
    for w in res.get("store_teacher", {}):
        s = res["store_teacher"][w]
        out.append(f"  {'store ŷ+label+teacher maps, ' + str(w) + ' workers':<42} {s['samples_per_s']:>10,.0f} "
                   f"{s['first_batch_s']:>14.3f}{s['steady_samples_per_s']:>18,.0f}")
    for w in workers:
        p = res["pixels"][w]
        out.append(f"  {'pixels (ImageFolder RRC+flip), ' + str(w) + ' workers':<42} {p['samples_per_s']:>10,.0f} "
                   f"{p['first_batch_s']:>14.3f}{p['steady_samples_per_s']:>18,.0f}")
    o = res["on_the_fly"]
    out.append(f"  {'on-the-fly (JPEG, augment, Encoder), ' + str(otf) + ' samples':<42} "
               f"{o['samples_per_s']:>10,.3f} {'':>14}")
    for name in ("raw_cold", "raw_warm", "raw_teacher_warm"):
        if name in res:
            r = res[name]
            label = {"raw_cold": "raw read, cold-ish (fadvise DONTNEED)", "raw_warm": "raw read, warm (page cache)",
                     "raw_teacher_warm": "raw read, teacher store, warm"}[name]
            out.append(f"  {label:<42} {r['samples_per_s']:>10,.0f}   {r['bytes_per_s'] / 1e6:,.0f} MB/s, "
                       f"{r['bytes_per_sample'] / 1e3:.0f} kB/sample")
    best = max(res["store"].values(), key=lambda s: s["samples_per_s"])["samples_per_s"]
    best_px = max(res["pixels"].values(), key=lambda s: s["samples_per_s"])["samples_per_s"]
    out += ["", f"ratios (store = best store setting, {best:,.0f} samples/s):",
            ratio_line("store / on-the-fly", best / o["samples_per_s"]),
            ratio_line("store / pixels", best / best_px)]
    for w in workers:
        out.append(ratio_line("store / pixels", res["store"][w]["samples_per_s"] / res["pixels"][w]["samples_per_s"])
                   .replace("store / pixels          ", f"  same workers ({w})".ljust(24)))
    out.append(ratio_line("store / raw read", best / res["raw_cold"]["samples_per_s"]).replace(
        "store / raw read  ", "store / raw cold-ish"))
    out.append(ratio_line("store / raw read", best / res["raw_warm"]["samples_per_s"]).replace(
        "store / raw read", "store / raw warm"))
    d = res["data_wait"]
    per_step = ", ".join(f"{w:.1%}" for w in d["per_step"])
    steps_s = ", ".join(f"{s:.1f}" for s in d["step_s"])
    out += ["", f"data-wait fraction, train/classify.py ResNet-50-aa, batch {BATCH}, CPU, "
                f"{d['workers']} workers, {len(d['per_step'])} steps (s/step: {steps_s}):",
            f"  per step {per_step}",
            f"  all steps {d['all']:.1%} ({'meets' if d['all'] < DATA_WAIT_TARGET else 'SHORT of'} target < 5%); "
            + (f"after the first step {d['after_first']:.1%}" if d["after_first"] is not None else "")]
    if res["build_s"]:
        out.append(f"\nstore build (one time): {res['build_s']:.0f} s for {res['images']} samples")
    out.append(f"\nmachine at the end: {res['machine_after']}\ntotal {res['total_s']:.0f} s")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
