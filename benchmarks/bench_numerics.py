"""The speed cost of portable numerics: the encoder per crop, pinned (portable) vs native, in one run.

    python benchmarks/bench_numerics.py                          # cheng2020-anchor q3, 8 crops of 224 (padded to 256)
    python benchmarks/bench_numerics.py --coders mbt2018-mean,cheng2020-anchor --images 16 --repeats 3

Each mode runs in its own interpreter (the pins must be set before torch loads), one thread, the
same crops and seeded weights; the modes alternate round by round, so a burst of load on a shared
machine hits both, and each mode's fastest round is reported with its CPU time per crop. The last
columns say whether the two modes' ŷ and strings are byte-identical (on an AVX-512 machine they
are not: that is the point of pinning).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latentstore.store.numerics import PORTABLE_ENV, cpu_model  # noqa: E402  (no torch: the parent stays unpinned)

MODES = ("native", "portable")


def environment(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    return {**env, **PORTABLE_ENV} if mode == "portable" else env


def child(coder_name: str, images: int) -> None:
    """One timed pass in this interpreter's numerics: prints {"wall", "cpu", "y_hat", "strings", "numerics"}."""
    import torch

    from bench_encode import demo_crops
    from latentstore.store import numerics
    from latentstore.coders.registry import LoadedCoder, get_spec, untrained_coder
    from latentstore.build.encoder import Encoder, to_input

    torch.set_num_threads(1)
    spec = get_spec(coder_name)
    coder = LoadedCoder(untrained_coder(spec, 3), spec, 3, {})
    crops = (demo_crops(images, 224).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    x = torch.cat([to_input([c])[0] for c in crops])  # 224 crops zero-padded to 256, as a build does
    encoder = Encoder(coder)
    encoder.encode(x[:1])  # warm-up: first-call set-up is not per-crop cost
    wall, cpu = time.perf_counter(), time.process_time()
    out = [e for i in range(images) for e in encoder.encode(x[i:i + 1])]
    wall, cpu = (time.perf_counter() - wall) / images, (time.process_time() - cpu) / images
    y_hat, strings = hashlib.sha256(), hashlib.sha256()
    for e in out:
        y_hat.update(e.y_hat.tobytes())
        strings.update(e.y_string + (e.z_string or b""))
    print(json.dumps({"wall": wall, "cpu": cpu, "y_hat": y_hat.hexdigest()[:12], "strings": strings.hexdigest()[:12],
                      "numerics": numerics.running_mode()}))


def run(mode: str, coder: str, images: int) -> dict:
    here = Path(__file__).resolve().parent
    done = subprocess.run([sys.executable, __file__, "--child", coder, "--images", str(images)], env=environment(mode),
                          cwd=here, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["numerics"] == mode, f"the {mode} child ran {result['numerics']}"
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coders", default="cheng2020-anchor")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; each mode's fastest is reported")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.images)
    print(f"{cpu_model()}, {os.cpu_count()} CPUs, {args.images} crops of 224 "
          f"(padded to 256), 1 thread, best of {args.repeats} interleaved rounds\n")
    print(f"{'coder':18} {'native ms/crop':>15} {'portable ms/crop':>17} {'cost wall':>10} {'cost cpu':>9}  "
          "same ŷ  same strings")
    for coder in args.coders.split(","):
        rounds = {m: [] for m in MODES}
        for _ in range(args.repeats):
            for m in MODES:
                rounds[m].append(run(m, coder, args.images))
        best = {m: min(rounds[m], key=lambda r: r["wall"]) for m in MODES}
        cpu = {m: min(r["cpu"] for r in rounds[m]) for m in MODES}
        n, p = best["native"], best["portable"]
        print(f"{coder:18} {1e3 * n['wall']:15.1f} {1e3 * p['wall']:17.1f} {p['wall'] / n['wall'] - 1:+10.1%} "
              f"{cpu['portable'] / cpu['native'] - 1:+9.1%}  {str(n['y_hat'] == p['y_hat']):6}  "
              f"{n['strings'] == p['strings']}")


if __name__ == "__main__":
    main()
