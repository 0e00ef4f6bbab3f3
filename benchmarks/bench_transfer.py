"""Training speed per epoch with and without knowledge transfer, side by side in one run (issue 28, item 2:
"--transfer mse slowed from 3.9 to 0.5-0.6 samples/s after the first epoch").

    python benchmarks/bench_transfer.py --work /tmp/bench-transfer            # ~6 min on 2 cores

The issue's setting, rebuilt: --images resized demo photos in 3 classes, bmshj2018-hyperprior q1 (seeded
untrained weights), a resnet50 teacher (untrained; strides 8, 16, 32 in float16, ~1.4 MB a sample), 3
variants of 224 crops; then train/classify.py --model resnet50-aa, batch 8, the default 4 workers, every step
logged, once with --transfer none and once with --transfer mse. Printed per epoch: the median samples/s of
its steps and the share of time spent waiting for data. Every command runs through the real command line.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "latentstore" / "data" / "demo-imagenet"


def photos(root: Path, images: int) -> None:
    from PIL import Image

    sources = sorted(DEMO.rglob("*.JPEG"))
    for i in range(images):
        folder = root / "train" / f"class{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.open(sources[i % len(sources)]).convert("RGB").resize((256 + 8 * i, 240 + 4 * i)).save(folder / f"{i}.jpg")


def run(*argv) -> None:
    subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, check=True)


def per_epoch(metrics: Path) -> dict:
    """{epoch: (median samples/s, mean data_wait)} from a run's metrics.csv."""
    rates, waits = defaultdict(list), defaultdict(list)
    with open(metrics, newline="") as f:
        for row in csv.DictReader(f):
            if row["name"] == "samples_per_s":
                rates[int(row["epoch"])].append(float(row["value"]))
            elif row["name"] == "data_wait":
                waits[int(row["epoch"])].append(float(row["value"]))
    return {e: (statistics.median(rates[e]), statistics.fmean(waits[e])) for e in sorted(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (photos, store, runs)")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    store = args.work / "store"
    if not (store / "manifest.json").is_file():
        photos(args.work / "photos", args.images)
        run("-m", "latentstore", "build", "--coder", "bmshj2018-hyperprior", "--quality", 1, "--weights", "untrained",
            "--dataset", "imagefolder", "--root", args.work / "photos", "--variants", 3, "--teacher", "resnet50",
            "--teacher-weights", "untrained", "--out", store, "--quiet")
    results = {}
    for transfer in ("none", "mse"):
        out = args.work / f"run-{transfer}"
        print(f"--transfer {transfer}: load average {os.getloadavg()[0]:.2f} before the run", flush=True)
        run("train/classify.py", "--store", store, "--out", out, "--model", "resnet50-aa", "--epochs", args.epochs,
            "--batch-size", 8, "--transfer", transfer, "--val-split", "none", "--log-every", 1, "--resume", "never",
            "--no-progress")
        results[transfer] = per_epoch(out / "metrics.csv")
    print(f"\n{args.images} images x 3 variants, resnet50-aa, batch 8, 4 workers; median samples/s of an epoch's "
          "steps (data_wait: share of time waiting for data)")
    print(f"{'epoch':>5}  {'--transfer none':>24}  {'--transfer mse':>24}")
    for epoch in results["none"]:
        cells = [f"{r:8.2f} (wait {w:4.0%})" for r, w in (results[t].get(epoch, (0, 0)) for t in ("none", "mse"))]
        print(f"{epoch:>5}  {cells[0]:>24}  {cells[1]:>24}")


if __name__ == "__main__":
    main()
