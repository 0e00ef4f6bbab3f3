"""How long commands that only parse arguments or list names take: wall time per command, side by side.

    python benchmarks/bench_startup.py [--trials 3] [--baseline /path/to/other/checkout]

Each command runs in a fresh interpreter (`python -m latentstore ...`, `python train/classify.py ...`),
as a user types it; the median of --trials runs is shown. With --baseline, the same commands also run
against another checkout's latentstore (PYTHONPATH), interleaved, so both columns see the same machine load.
The target (issue 28): each under 1.5 s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_ERROR = ["--dataset", "imagefolder", "--root", ".", "--out", "/nonexistent/never-made"]
BUILD = ["-m", "latentstore", "build", "--coder", "cheng2020", "--quality", "3", "--dataset", "imagefolder",
         "--root", "latentstore/data/demo-imagenet", "--out", "/nonexistent/never-made"]
COMMANDS = {
    "latentstore build --help": ["-m", "latentstore", "build", "--help"],
    "build: unknown coder": ["-m", "latentstore", "build", "--coder", "nope", "--quality", "3", *BUILD_ERROR],
    "build: bad quality": ["-m", "latentstore", "build", "--coder", "cheng2020", "--quality", "9", *BUILD_ERROR],
    "build: val with --variants 3": [*BUILD, "--split", "val", "--variants", "3"],
    "build: bad --teacher-strides": [*BUILD, "--teacher", "resnet18", "--teacher-strides", "8,x"],
    "build: bad --split": [*BUILD, "--split", "../x"],
    "build: unknown --teacher": [*BUILD, "--teacher", "resnet5O"],
    "latentstore models": ["-m", "latentstore", "models"],
    "train/classify.py --help": ["train/classify.py", "--help"],
    "train/segment.py --help": ["train/segment.py", "--help"],
}


def wall(argv: list, tree: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout to time the same commands in")
    args = parser.parse_args()
    trees = {"this tree": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    print(f"{'command':<30}" + "".join(f"{name:>12}" for name in trees) + "   (median of "
          f"{args.trials}, seconds)", flush=True)
    for label, argv in COMMANDS.items():
        times = {name: [] for name in trees}
        for _ in range(args.trials):
            for name, tree in trees.items():
                times[name].append(wall(argv, tree))
        print(f"{label:<30}" + "".join(f"{statistics.median(t):>12.2f}" for t in times.values()), flush=True)


if __name__ == "__main__":
    main()
