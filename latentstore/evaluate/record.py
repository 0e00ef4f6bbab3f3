"""The eval record (eval.json, described in docs/results.md), its Markdown row and the closing summary."""
from __future__ import annotations

import time
from pathlib import Path

from ..store.location import is_url, shown
from .rate import check_rate

RECORD_KIND, RECORD_VERSION = "latentstore-eval", 1


def make_record(cfg, task: str, manifest: dict, split: str, ckpt, model, metrics: dict, rate, world: int,
                start: float) -> dict:
    """The eval.json record: metrics, the checked rate, and where store and checkpoint came from."""
    from .report import method_label

    rate_summary = rate.summary()
    check = check_rate(rate_summary, manifest, split, cfg.variant)
    coder = manifest["coder"]
    record = {
        "kind": RECORD_KIND, "version": RECORD_VERSION, "task": task,
        "method": cfg.method or method_label(ckpt.model_name, ckpt.transfer),
        "model": ckpt.model_name, "transfer": ckpt.transfer,
        "coder": coder["name"], "quality": coder["quality"],
        "coder_weights": {k: coder["weights"].get(k) for k in ("source", "trained", "sha256")},
        **{k: v for k, v in rate_summary.items() if k != "samples"}, **check, **metrics,
        "store": {"path": shown(cfg.store) if is_url(cfg.store) else str(Path(cfg.store).resolve()),
                  "split": split, "variant": cfg.variant,
                  "latent_shape": manifest["splits"][split]["latent_shape"]},
        "checkpoint": {"path": str(Path(cfg.checkpoint).resolve()), "sha256": ckpt.sha256,
                       "step": ckpt.step, "epoch": ckpt.epoch},
        "world_size": world, "device": cfg.device, "seconds": round(time.perf_counter() - start, 3),
    }
    if cfg.complexity:
        c, _, _ = manifest["splits"][split]["latent_shape"]
        r0, r1, c0, c1 = manifest["splits"][split]["valid_region"]  # what the model sees (trainers crop so)
        record["complexity"] = measure_complexity(model, (c, r1 - r0, c1 - c0))
    return record


def measure_complexity(model, latent_shape) -> dict:
    """Params, MACs and latency of ``model`` on one ŷ of ``latent_shape`` (latentstore.models.complexity)."""
    from ..models.complexity import measure
    from .report import complexity_row

    return complexity_row(measure(model.registry_name, model.cpu(), tuple(latent_shape)))


def write_outputs(record: dict, out: Path) -> str:
    """eval.json (atomically) and eval.md (the Markdown row) beside it; returns the Markdown."""
    from ..store.format import write_json_atomic
    from .report import markdown_row, per_class_table

    write_json_atomic(out, record)
    md = markdown_row(record)
    if record["task"] == "segmentation":
        md += "\n\n" + per_class_table(record)
    out.with_suffix(".md").write_text(md + "\n")
    return md


def summary(record: dict, out: Path) -> str:
    """The end of an eval: its headline numbers, and the files it wrote."""
    if record["task"] == "classification":
        numbers = f"top-1 {record['top1']:.2f} %, top-5 {record['top5']:.2f} %"
    else:
        numbers = f"mIoU {record['miou']:.2f} %, pixel accuracy {record['pixel_accuracy']:.2f} %"
    bpp = "-" if record["bpp"] is None else f"{record['bpp']:.4f}"
    return (f"{record['method']}: {numbers}, {bpp} bpp on {record['samples']} samples "
            f"(split {record['store']['split']}, variant {record['store']['variant']}, {record['seconds']:.1f} s)\n"
            f"wrote {out} and {out.with_suffix('.md')}")
