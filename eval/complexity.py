"""Print params, MACs and latency of compressed-domain models as a Markdown table.

    python eval/complexity.py --models resnet50,resnet50-aa,cresnet51,decode+resnet50 \
        --coder cheng2020 --quality 3

Inputs: ŷ of the coder/quality's channel count at image-size/16 for models on
ŷ (decode+<model> includes g_s), a 3×S×S image for pixel models. MACs are
multiply-accumulates of conv/linear/GDN layers (latentstore.models.complexity).
Latency: batch 1, eval mode, `--warmup` untimed runs then the median of
`--runs` timed ones, on CPU (torch's default thread count) and, when CUDA is
present, on the GPU with synchronization around each run.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from latentstore.models.complexity import markdown_table, model_table
from latentstore.errors import LatentstoreError


@dataclass(frozen=True)
class Config:
    models: tuple
    coder: str = "cheng2020"
    quality: int = 3
    image_size: int = 224
    coder_weights: str = "untrained"
    num_classes: int | None = None
    runs: int = 10
    warmup: int = 3
    latency: bool = True
    json: str | None = None
    progress: bool = True


def parse(argv=None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--models", required=True, help="comma-separated registry names (latentstore.models)")
    p.add_argument("--coder", default=Config.coder)
    p.add_argument("--quality", type=int, default=Config.quality)
    p.add_argument("--image-size", type=int, default=Config.image_size,
                   help="image side in pixels (latent side = this / 16); 640 for the paper's PSPNet counts")
    p.add_argument("--coder-weights", default=Config.coder_weights,
                   help="g_s weights for decode+<model>: untrained (no download; counts are the same), "
                        "pretrained or a checkpoint path")
    p.add_argument("--num-classes", type=int, default=None, help="default: 1000, or 19 for segmentation")
    p.add_argument("--runs", type=int, default=Config.runs)
    p.add_argument("--warmup", type=int, default=Config.warmup)
    p.add_argument("--no-latency", dest="latency", action="store_false", help="counts only")
    p.add_argument("--json", default=None, help="also write the rows as JSON here (eval/plot.py --complexity)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)  # argparse exits with an error on unknown flags
    models = tuple(m.strip() for m in a.models.split(",") if m.strip())
    return Config(models, a.coder, a.quality, a.image_size, a.coder_weights, a.num_classes,
                  a.runs, a.warmup, a.latency, a.json, progress=not a.quiet)


def main(argv=None) -> int:
    cfg = parse(argv)
    try:
        rows = model_table(cfg.models, cfg.coder, cfg.quality, cfg.image_size, cfg.coder_weights,
                           cfg.num_classes, cfg.latency, cfg.runs, cfg.warmup, progress=cfg.progress)
    except LatentstoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Coder {cfg.coder} q{cfg.quality}, image {cfg.image_size}×{cfg.image_size}. "
          "MACs = multiply-accumulates (conv/linear/GDN), per image.")
    if cfg.latency:
        print(f"Latency: batch 1, {cfg.warmup} warm-up runs, median of {cfg.runs}.")
    print()
    print(markdown_table(rows))
    if cfg.json:
        from latentstore.store.format import write_json_atomic
        from latentstore.evaluate.report import complexity_row
        write_json_atomic(cfg.json, [complexity_row(r) for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
