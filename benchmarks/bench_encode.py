"""Encoder.encode vs CompressAI's compress(), one image at a time, in one run.

    python benchmarks/bench_encode.py                       # cheng2020-anchor q3, 16 crops of the demo photos
    python benchmarks/bench_encode.py --coder mbt2018 --batch-sizes 1,4 --images 8

Prints seconds per image for each way of encoding the same images, and fails
if any string differs from compress()'s. Each method runs --repeats times in
turn (interleaved, so a burst of load on a shared machine hits all of them)
and the fastest round is reported, with the median beside it. CPU time
(all threads of this process) is printed too: on a shared machine it moves
far less with other jobs' load than wall time does.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import latentstore
from latentstore.coders.registry import LoadedCoder, get_spec, untrained_coder
from latentstore.build.encoder import Encoder

DEMO = Path(latentstore.__file__).parent / "data" / "demo-imagenet"


def demo_crops(n: int, size: int) -> torch.Tensor:
    """n distinct size x size crops (different offsets, some flipped) of the bundled photos."""
    photos = []
    for f in sorted(DEMO.rglob("*.JPEG")):
        img = Image.open(f).convert("RGB")
        scale = (size + 64) / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
        photos.append(np.asarray(img))
    crops = []
    for i in range(n):
        a = photos[i % len(photos)]
        k = i // len(photos)
        top, left = (17 * k) % (a.shape[0] - size + 1), (29 * k) % (a.shape[1] - size + 1)
        c = a[top:top + size, left:left + size]
        crops.append(c[:, ::-1] if k % 2 else c)
    x = torch.from_numpy(np.stack(crops).copy()).permute(0, 3, 1, 2)
    return x.float().div(255).contiguous()


def run_compress(model, x):
    with torch.no_grad():
        return [tuple(s[0] for s in model.compress(x[i:i + 1])["strings"]) for i in range(x.shape[0])]


def run_encoder(encoder, x, batch):
    strings = []
    for start in range(0, x.shape[0], batch):
        strings += [(e.y_string,) if e.z_string is None else (e.y_string, e.z_string)
                    for e in encoder.encode(x[start:start + batch])]
    return strings


def run_non_ar(model, x):
    """The floor: g_a, h_a and h_s per image, without the entropy-coding loop."""
    with torch.no_grad():
        for i in range(x.shape[0]):
            y = model.g_a(x[i:i + 1])
            model.h_s(torch.round(model.h_a(y)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coder", default="cheng2020-anchor")
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-sizes", default="1,8,16")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    spec = get_spec(args.coder)
    model = untrained_coder(spec, args.quality, seed=0)
    encoder = Encoder(LoadedCoder(model, spec, args.quality, {"source": "untrained"}))
    x = demo_crops(args.images, args.size)
    batches = [int(b) for b in args.batch_sizes.split(",")]

    methods = {"compress() per image": lambda: run_compress(model, x)}
    methods.update({f"Encoder.encode B={b}": (lambda b=b: run_encoder(encoder, x, b)) for b in batches})
    if spec.latent_kind == "context":
        methods["floor: g_a+h_a+h_s only"] = lambda: run_non_ar(model, x)

    print(f"{spec.name} q{args.quality} (untrained_coder, seed 0), {args.images} images "
          f"{args.size}x{args.size} from {DEMO.name}")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    encoder.encode(x[:1]), run_compress(model, x[:1])  # warm up oneDNN's primitive caches

    times = {name: [] for name in methods}
    cpu = {name: [] for name in methods}  # process CPU time: less sensitive to other jobs' load
    reference = None
    for _ in range(args.repeats):
        for name, fn in methods.items():
            t0, c0 = time.perf_counter(), time.process_time()
            strings = fn()
            times[name].append((time.perf_counter() - t0) / args.images)
            cpu[name].append((time.process_time() - c0) / args.images)
            if strings is None:
                continue
            if reference is None:
                reference = strings
            elif strings != reference:
                raise SystemExit(f"FAIL: {name} wrote strings that differ from compress()")

    base = min(times["compress() per image"])
    cpu_base = min(cpu["compress() per image"])
    print(f"\n{'method':<28}{'wall s/image (best)':>20}{'median':>8}{'speed-up':>10}"
          f"{'CPU s/image':>13}{'speed-up':>10}")
    for name, ts in times.items():
        c = min(cpu[name])
        print(f"{name:<28}{min(ts):>20.3f}{statistics.median(ts):>8.3f}{base / min(ts):>9.2f}x"
              f"{c:>13.3f}{cpu_base / c:>9.2f}x")
    print(f"\nall {args.images} y and z strings identical to compress() at every batch size; "
          f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
