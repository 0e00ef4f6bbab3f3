"""The build's encoder against each coder's own compress() (and compress() + decompress()), in one run.

    python benchmarks/bench_coders.py                 # 4 crops of 224 (padded to 256), 2 rounds
    python benchmarks/bench_coders.py --images 8 --repeats 3

At 224 crops padded to 256, on the CPU, in one process at the store's thread count (1), for
cheng2020-anchor (single pass), cheng2020-checkerboard, elic2022-official and elic2022-chandelier
(generic path, ŷ from compress(): "compress ŷ") and a user's CompressionModel subclass (generic path,
ŷ from decompress() up to g_s: "generic"): seconds per image of compress(), of compress() +
decompress(), and of the encoder a build runs (generic_encoder.make_encoder), which is what a build
spends per image apart from decoding, augmenting and writing. Seeded untrained weights with
non-trivial symbols (weights do not change the work). The methods of one coder run interleaved,
--repeats rounds, the fastest reported. Fails if the encoder's strings differ from compress()'s.
Targets (issue 26): generic path <= 2.2x compress(); no build slower than compress() + decompress().
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
from compressai.models import MeanScaleHyperprior

from bench_encode import demo_crops
from latentstore.store import strings_container
from latentstore.coders.registry import CODERS, CoderSpec, LoadedCoder, untrained_coder
from latentstore.build.generic_encoder import make_encoder
from latentstore.store.threads import store_threads


class UserMeanScale(MeanScaleHyperprior):
    """A user's model: a subclass no table knows, so a build takes the generic path (--coder module:Class)."""

    def __init__(self):
        super().__init__(N=192, M=320)


def user_coder() -> LoadedCoder:
    torch.manual_seed(0)
    model = UserMeanScale()
    with torch.no_grad():
        model.g_a[-1].weight.mul_(32.0)
        model.g_a[-1].bias.mul_(32.0)
    model.update(force=True)
    spec = CoderSpec("bench:UserMeanScale", UserMeanScale, {}, "generic", in_zoo=False)
    return LoadedCoder(model=model.eval(), spec=spec, quality=0, weights={})


def coders(quality: int) -> dict:
    out = {}
    for name in ("cheng2020-anchor", "cheng2020-checkerboard", "elic2022-official", "elic2022-chandelier"):
        spec = CODERS[name]
        out[name] = LoadedCoder(model=untrained_coder(spec, quality), spec=spec, quality=quality, weights={})
    out["custom (generic path)"] = user_coder()
    return out


def path_label(spec: CoderSpec) -> str:
    """The path as docs/coders.md names it."""
    if spec.path == "single-pass":
        return "single pass"
    return "compress ŷ" if spec.y_hat_in_compress else "generic"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quality", type=int, default=6, help="cheng2020-anchor quality (6: N = 192, as the others)")
    a = ap.parse_args()
    x = demo_crops(a.images, 224)
    x = torch.nn.functional.pad(x, (16, 16, 16, 16))  # 224 -> 256, as a build pads
    print(f"{a.images} crops 224 -> 256, 1 thread, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}; seconds per image (fastest of {a.repeats}), img/s in brackets")
    print(f"{'coder':24} {'path':12} {'compress':>16} {'compress+decomp':>18} {'build encoder':>16} "
          f"{'build/compress':>15} {'build/(c+d)':>12}")
    for name, coder in coders(a.quality).items():
        model, encoder = coder.model, make_encoder(coder)
        images = [x[i:i + 1].contiguous() for i in range(a.images)]

        def compress_only():
            return [model.compress(im) for im in images]

        def both():
            for im in images:
                out = model.compress(im)
                model.decompress(out["strings"], out["shape"])

        def build():
            return encoder.encode(x)

        best = {"c": float("inf"), "cd": float("inf"), "b": float("inf")}
        with store_threads():
            for _ in range(a.repeats):
                best["c"] = min(best["c"], timed(compress_only))
                best["cd"] = min(best["cd"], timed(both))
                best["b"] = min(best["b"], timed(build))
            reference, encoded = compress_only(), build()
        for ref, enc in zip(reference, encoded, strict=True):
            streams = [s[0] for s in ref["strings"]]
            got = (strings_container.unpack(enc.y_string)[0] if coder.spec.path == "generic"
                   else [enc.y_string, enc.z_string])
            if got != streams:
                raise SystemExit(f"{name}: the build's strings differ from compress()'s")
        per = {k: v / a.images for k, v in best.items()}
        print(f"{name:24} {path_label(coder.spec):12} {per['c']:8.3f} ({1 / per['c']:5.2f}) {per['cd']:10.3f} "
              f"({1 / per['cd']:5.2f}) {per['b']:8.3f} ({1 / per['b']:5.2f}) {per['b'] / per['c']:15.2f} "
              f"{per['b'] / per['cd']:12.2f}")


if __name__ == "__main__":
    main()
