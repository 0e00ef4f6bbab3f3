"""The build and the reader of this checkout side by side with another one, in one run, on the same inputs.

    git worktree add /tmp/before <commit>
    python benchmarks/bench_checkouts.py --other /tmp/before [--rounds 3]

For a change that must not make the pipeline slower (a restructuring): each checkout builds the same
store of the bundled demo photos through its own command line (bmshj2018-hyperprior q1, untrained,
seeded, 128 px crops, 12 variants, 8 items per shard; --encoders 1, then --workers 2), and reads every
sample (y_hat, label) of it ``--epochs`` times in a fresh interpreter, after one untimed epoch (the
digest check). The checkouts alternate for ``--rounds`` rounds and each figure is its best round. The
two checkouts' stores must be byte-identical (sha256 of every file); the script fails if they are not.
"""
import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
DEMO = HERE / "latentstore" / "data" / "demo-imagenet"
READ = """
import sys, time
from latentstore import open_store
store, epochs = sys.argv[1], int(sys.argv[2])
list(open_store(store, fields=("y_hat", "label")))  # first epoch: digests checked once per process
t, n = time.perf_counter(), 0
for _ in range(epochs):
    n += sum(1 for _ in open_store(store, fields=("y_hat", "label")))
print(n / (time.perf_counter() - t))
"""
BUILD = ["build", "--coder", "bmshj2018-hyperprior", "--quality", "1", "--weights", "untrained",
         "--dataset", "imagefolder", "--root", str(DEMO), "--split", "train", "--variants", "12", "--crop", "128",
         "--shard-size", "8", "--quiet"]


def environment(checkout: Path) -> dict:
    return {"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}


def cli(checkout: Path) -> list:
    """How this checkout's command line starts (`python -m latentstore` since the restructuring)."""
    module = "latentstore" if (checkout / "latentstore" / "__main__.py").exists() else "latentstore.cli"
    return [sys.executable, "-m", module]


def build_time(checkout: Path, out: Path, extra: list) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run(cli(checkout) + BUILD + ["--out", str(out), *extra], check=True, capture_output=True,
                   env=environment(checkout), cwd=checkout)  # cwd: `-m` puts it first on sys.path
    return time.perf_counter() - t


def read_speed(checkout: Path, store: Path, epochs: int) -> float:
    out = subprocess.run([sys.executable, "-c", READ, str(store), str(epochs)], check=True, text=True,
                         capture_output=True, env=environment(checkout), cwd=checkout)
    return float(out.stdout.split()[-1])


def digests(store: Path) -> dict:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file() and not p.name.startswith("build-")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other", required=True, help="the checkout to compare with (e.g. a git worktree)")
    ap.add_argument("--epochs", type=int, default=5, help="timed read epochs per measurement (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds, best kept (default 3)")
    args = ap.parse_args()
    trees = {"this": HERE, "other": Path(args.other).resolve()}
    images = sum(1 for p in (DEMO / "train").rglob("*") if p.is_file()) * 12
    best = {(name, what): None for name in trees for what in ("build", "build --workers 2", "read")}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):
            for name, tree in trees.items():
                out = Path(work) / name
                for what, extra in (("build --workers 2", ["--workers", "2"]), ("build", [])):
                    rate = images / build_time(tree, out, extra)
                    best[name, what] = max(rate, best[name, what] or 0)
                rate = read_speed(tree, out, args.epochs)
                best[name, "read"] = max(rate, best[name, "read"] or 0)
        same = digests(Path(work) / "this") == digests(Path(work) / "other")
    print(f"{'':28}{'this':>12}{'other':>12}{'this/other':>12}")
    for what, unit in (("build", "img/s"), ("build --workers 2", "img/s"), ("read", "samples/s")):
        a, b = best["this", what], best["other", what]
        print(f"{what + ' (' + unit + ')':28}{a:12.2f}{b:12.2f}{a / b:12.2f}")
    print(f"stores byte-identical: {same}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
