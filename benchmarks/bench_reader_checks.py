"""Reader speed with the open-time checks of issue 24 (array descriptions, recorded paths), side by side
with another checkout in one run, on the same stores.

    git worktree add /tmp/before <commit before the checks>
    python benchmarks/bench_reader_checks.py --other /tmp/before [--epochs 5] [--rounds 3]

Builds (once, with this checkout; store bytes are the same on both) a Zarr and a WebDataset store of the
bundled demo photos: bmshj2018-hyperprior q1, untrained (seeded), 64 px crops, 8 variants, 2 items per
shard, so many small units: the per-unit checks weigh the most there. Each checkout then reads every
sample (y_hat, label) ``--epochs`` times in a fresh interpreter; the first epoch (digests) is left out,
the figure is samples/s over the rest; the two checkouts alternate for ``--rounds`` rounds, best kept.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench_checkouts import read_speed  # one timed read, in a fresh interpreter of a checkout

HERE = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other", required=True, help="the checkout to compare with (e.g. a git worktree of main)")
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs per measurement (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds, best kept (default 3)")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import os

    from latentstore.store.numerics import PORTABLE_ENV
    os.environ.update(PORTABLE_ENV)  # the build's numerics, before torch loads
    from latentstore.build.run import BuildConfig, build

    demo = HERE / "latentstore" / "data" / "demo-imagenet"
    with tempfile.TemporaryDirectory() as work:
        stores = {}
        for fmt in ("zarr", "webdataset"):
            stores[fmt] = Path(work) / fmt
            build(BuildConfig(coder="bmshj2018-hyperprior", quality=1, weights="untrained", dataset="imagefolder",
                              split="train", variants=8, crop=64, shard_size=2, root=str(demo),
                              out=str(stores[fmt]), format=fmt), progress=False)
        trees = {"this": HERE, "other": Path(args.other)}
        print(f"{'store':<12}{'this (samples/s)':>18}{'other (samples/s)':>19}{'ratio':>8}")
        for fmt, store in stores.items():
            best = {name: 0.0 for name in trees}
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    best[name] = max(best[name], read_speed(tree, store, args.epochs))
            print(f"{fmt:<12}{best['this']:>18.0f}{best['other']:>19.0f}{best['this'] / best['other']:>8.2f}")
        print(f"(this: {HERE}, other: {args.other}; {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
