"""Where an autoregressive coder's per-image CPU time goes, down to the operators of its loop.

    python benchmarks/profile_context_loop.py                    # cheng2020-anchor q3, 4 crops
    python benchmarks/profile_context_loop.py --coder mbt2018 --quality 3 --images 2

With `build --device cuda` only g_a and h_a leave the CPU; the rest of this table (ẑ, h_s, the
serial loop, rANS) stays there, call for call as CompressAI's decoder runs it, so it bounds what
a GPU can give a build (docs/benchmarks.md, "GPU node (issue 14)"). The encoder's own stages
come from its Profiler, at the build's one thread per process; the loop is then run once more
under torch.profiler and split by operator: the context convolution (one call per
position), entropy_parameters' 1x1 convolutions (three per position) and everything else (slicing, concatenation, rounding, copies).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from latentstore.coders.registry import load_coder
from latentstore.build.encoder import Encoder
from latentstore.build.timing import Profiler
from latentstore.store.threads import store_threads

from bench_encode import demo_crops


def loop_operators(encoder: Encoder, x: torch.Tensor) -> dict:
    """{operator group: (self CPU seconds, calls)} of one image's autoregressive loop."""
    model = encoder.model
    with torch.no_grad(), store_threads():
        y = model.g_a(x)
        _, z_hat, _ = encoder._bottleneck_code(model.h_a(y))
        params = model.h_s(z_hat)
        encoder._context_loop_one(y, params)  # warm-up: oneDNN builds its primitives once
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            encoder._context_loop_one(y, params)
    # Convolutions told apart by their input, not by kernel name (which depends on the CPU):
    # the context conv reads a 5x5 crop of ŷ, entropy_parameters' 1x1 convs one position.
    groups = {"context conv": [0.0, 0], "entropy_parameters 1x1 convs": [0.0, 0]}
    for op in prof.key_averages(group_by_input_shape=True):
        if op.key == "aten::conv2d":
            group = groups["entropy_parameters 1x1 convs" if op.input_shapes[0][-2:] == [1, 1] else "context conv"]
            group[0] += op.cpu_time_total / 1e6
            group[1] += op.count
    loop = sum(op.self_cpu_time_total for op in prof.key_averages()) / 1e6
    groups["everything else"] = [loop - sum(s for s, _ in groups.values()), 0]
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coder", default="cheng2020-anchor")
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--images", type=int, default=4, help="256x256 crops of the bundled photos")
    args = ap.parse_args()

    coder = load_coder(args.coder, args.quality, weights="untrained")
    if coder.spec.latent_kind != "context":
        raise SystemExit(f"{args.coder} has no autoregressive loop; choose cheng2020-anchor, cheng2020-attn or mbt2018")
    prof = Profiler()
    encoder = Encoder(coder, profiler=prof)
    x = demo_crops(args.images, 256)
    encoder.encode(x[:1])                       # warm-up, not counted
    prof.totals.clear()
    encoder.encode(x)
    n = args.images
    with torch.no_grad(), store_threads():   # h_a alone: it leaves the CPU too, but is timed within "hyper"
        ys = [coder.model.g_a(x[i:i + 1]) for i in range(n)]
        start = time.perf_counter()
        for y in ys:
            coder.model.h_a(y)
        h_a = time.perf_counter() - start
    print(f"{args.coder} q{args.quality} (untrained, seeded), {n} crops of 256x256, one thread, ms per image:")
    total = sum(s for s, _ in prof.totals.values())
    for stage, (seconds, _) in prof.totals.items():
        print(f"    {stage:<22} {seconds / n * 1e3:8.1f}  {seconds / total:6.1%}")
        if stage == "hyper":
            print(f"      of which h_a         {h_a / n * 1e3:8.1f}  {h_a / total:6.1%}")
    stays = total - prof.totals["g_a"][0] - h_a
    print(f"    all stages / what stays on the CPU with --device cuda (all but g_a, h_a): {total / stays:.2f}x,\n"
          "    the most a GPU can give per CPU core, were g_a and h_a free")

    groups = loop_operators(encoder, x[:1])
    loop = sum(s for s, _ in groups.values())
    positions = groups["context conv"][1]
    print("\nthe autoregressive loop of one image, by operator (torch.profiler, self CPU time):")
    for group, (seconds, calls) in groups.items():
        per_call = f"   {seconds / calls * 1e6:7.0f} us per call, {calls} calls" if calls else ""
        print(f"    {group:<30} {seconds * 1e3:7.1f} ms {seconds / loop:6.1%}{per_call}")
    print(f"    ({positions} positions: {loop / positions * 1e6:.0f} us each)")

if __name__ == "__main__":
    main()
