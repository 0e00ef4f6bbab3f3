"""Rate–accuracy / rate–mIoU curves and an accuracy–latency scatter from eval.json files.

    python eval/plot.py runs/*/eval.json --out rate_accuracy.png --paper
    python eval/plot.py runs/*/eval.json --out fig.png --latency --complexity complexity.json
    python eval/plot.py runs/*/eval.json --out fig.png --table results.md

One line per method (the records' "method"), points sorted by bpp. --paper adds
docs/method.md §6's published points as dashed reference markers. --latency adds an
accuracy–latency panel, with the latency from each record's "complexity"
(eval --complexity) or from a --complexity JSON (eval/complexity.py --json).
--table also writes the Markdown tables (methods × rate points). Logic:
latentstore.evaluate.report.
"""
import argparse
import sys
from dataclasses import dataclass

from latentstore.errors import LatentstoreError
from latentstore.evaluate.report import METRIC, load_complexity, load_records, plot, results_table, without_latency


@dataclass(frozen=True)
class Config:
    records: tuple
    out: str
    paper: bool = False
    latency: bool = False
    complexity: str | None = None
    latency_device: str = "cpu"
    table: str | None = None


def parse(argv=None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("records", nargs="+", help="eval.json files (eval/classify.py, eval/segment.py)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--paper", action="store_true", help="add the paper's published points (docs/method.md §6)")
    p.add_argument("--latency", action="store_true", help="add an accuracy–latency scatter")
    p.add_argument("--complexity", default=None, help="complexity JSON (eval/complexity.py --json) for --latency")
    p.add_argument("--latency-device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--table", default=None, help="also write the Markdown result tables here")
    a = p.parse_args(argv)
    return Config(tuple(a.records), a.out, a.paper, a.latency, a.complexity, a.latency_device, a.table)


def main(argv=None) -> int:
    cfg = parse(argv)
    try:
        records = load_records(cfg.records)
        complexity = load_complexity(cfg.complexity) if cfg.complexity else {}
        out = plot(records, cfg.out, cfg.paper, cfg.latency, complexity, cfg.latency_device)
        dropped = without_latency(records, complexity, cfg.latency_device) if cfg.latency else []
        if dropped:
            print(f"--latency: left out of the latency panel, without a {cfg.latency_device} latency "
                  "(eval --complexity, or --complexity FILE.json): " + "; ".join(dropped), file=sys.stderr)
        if cfg.table:
            tasks = [t for t in METRIC if any(r["task"] == t for r in records)]
            with open(cfg.table, "w") as f:
                f.write("\n\n".join(results_table(records, t, cfg.paper) for t in tasks) + "\n")
    except LatentstoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}" + (f" and {cfg.table}" if cfg.table else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
