"""Eval records -> the paper's tables and rate–accuracy plots.

One table of the paper's published numbers (docs/method.md §6), method labels in the
paper's spelling, Markdown in the paper's layout (rows = methods, columns =
rate points, cells = top-1 or mIoU in percent), and the figures: rate–accuracy
and rate–mIoU curves, one line per method, and an accuracy–latency scatter.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import ConfigError

# docs/method.md §6: cheng2020, top-1 % on ImageNet val at the paper's three rate points.
PAPER_BPP = (0.164, 0.340, 0.753)
PAPER = {
    "classification": {
        "Decode + ResNet-50": (68.28, 72.41, 74.15),
        "cResNet-51": (64.15, 66.76, 69.12),
        "ResNet-50-aa": (67.72, 71.16, 73.10),
        "ResNet-50-aa + transfer": (69.26, 72.24, 73.75),
        "Reshape + ResNet-50": (53.63, 54.59, 63.15),
    },
    # Cityscapes mIoU %, the same three operating points. the paper does not give their
    # Cityscapes bpp, so plots place them at the ImageNet bpp (docs/results.md says so).
    "segmentation": {
        "PSPNet-50-aa + transfer": (61.96, 65.26, 66.01),
        "Decode + PSPNet-50": (59.90, 66.94, 70.43),
    },
}
METRIC = {"classification": ("top1", "top-1 (%)"), "segmentation": ("miou", "mIoU (%)")}

# registry name -> the paper's spelling (anything else is shown as the registry name)
_NAMES = {"resnet50": "ResNet-50", "vgg11": "VGG-11", "vgg11_bn": "VGG-11-BN", "efficientnet_b0": "EfficientNet-B0",
          "pspnet50": "PSPNet-50", "cresnet51": "cResNet-51", "cresnet39": "cResNet-39"}


def _name(model: str) -> str:
    return _NAMES.get(model, model)


def method_label(model: str, transfer: str | None = None) -> str:
    """'resnet50-aa' + 'mse' -> 'ResNet-50-aa + transfer'; 'decode+resnet50' -> 'Decode + ResNet-50'."""
    if model.startswith("decode+"):
        label = "Decode + " + _name(model.removeprefix("decode+"))
    elif model.startswith("reshape+"):
        label = "Reshape + " + _name(model.removeprefix("reshape+"))
    elif model.endswith("-aa"):
        label = _name(model.removesuffix("-aa")) + "-aa"
    else:
        label = _name(model)
    if transfer and transfer != "none":
        label += " + transfer" if transfer == "mse" else f" + transfer ({transfer})"  # MSE is the paper's
    return label


def load_records(paths) -> list[dict]:
    """Read eval.json files; each must be a latentstore eval record."""
    records = []
    for p in paths:
        try:
            rec = json.loads(Path(p).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read eval record {p}: {exc}") from exc
        if rec.get("kind") != "latentstore-eval" or rec.get("task") not in METRIC:
            raise ConfigError(f"{p} is not a latentstore eval.json (written by eval/classify.py or eval/segment.py)")
        records.append({**rec, "_path": str(p)})
    return records


def _fmt(value, digits=2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_row(record: dict) -> str:
    """One result in the paper's layout: a header naming the rate point, and the method's row."""
    key, _ = METRIC[record["task"]]
    head = f"| method | {record['coder']} q{record['quality']}, {record['bpp']:.3f} bpp |"
    extra = f" (top-5 {_fmt(record.get('top5'))})" if record["task"] == "classification" else ""
    return "\n".join([head, "|---|---|", f"| {record['method']} | {_fmt(record[key])}{extra} |"])


def results_table(records: list[dict], task: str, paper: bool = False) -> str:
    """Methods × rate points, as in docs/method.md §6. Columns are (coder, quality), headed by the measured bpp."""
    key, label = METRIC[task]
    recs = [r for r in records if r["task"] == task]
    points = sorted({(r["coder"], r["quality"]) for r in recs}, key=lambda p: (p[0], p[1]))
    bpp = {p: sum(r["bpp"] for r in recs if (r["coder"], r["quality"]) == p)
           / sum(1 for r in recs if (r["coder"], r["quality"]) == p) for p in points}
    methods = list(dict.fromkeys(r["method"] for r in recs))
    head = ["method"] + [f"{c} q{q} ({bpp[(c, q)]:.3f} bpp)" for c, q in points]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = {(r["coder"], r["quality"]): r[key] for r in recs if r["method"] == m}
        lines.append("| " + " | ".join([m] + [_fmt(cells.get(p)) for p in points]) + " |")
    out = f"{label}, this run:\n\n" + "\n".join(lines)
    if paper:
        ph = ["method (paper, cheng2020)"] + [f"{b:.3f} bpp" for b in PAPER_BPP]
        pl = ["| " + " | ".join(ph) + " |", "|" + "---|" * len(ph)]
        pl += ["| " + " | ".join([m] + [_fmt(v) for v in vals]) + " |" for m, vals in PAPER[task].items()]
        out += f"\n\n{label}, paper (docs/method.md §6):\n\n" + "\n".join(pl)
    return out


def latency_of(record: dict, complexity: dict, device: str = "cpu"):
    """The model's latency in ms: from the record's own complexity, else from a complexity table by model."""
    own = record.get("complexity") or {}
    if own.get(f"{device}_ms") is not None:
        return own[f"{device}_ms"]
    row = complexity.get(record["model"]) or {}
    return row.get(f"{device}_ms")


def without_latency(records: list[dict], complexity: dict, device: str = "cpu") -> list[str]:
    """The classification records the latency panel leaves out (no latency figure), each named by its file."""
    return [f"{r.get('_path', r['model'])} ({r['method']}, {r['model']})" for r in records
            if r["task"] == "classification" and latency_of(r, complexity, device) is None]


def load_complexity(path) -> dict:
    """{model name: row} from a complexity JSON (``eval/complexity.py --json``: a list of rows with 'model')."""
    data = json.loads(Path(path).read_text())
    rows = data.get("rows", data) if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "model" in r for r in rows):
        raise ConfigError(f"{path}: expected a list of rows with 'model', 'cpu_ms' (eval/complexity.py --json)")
    return {r["model"]: r for r in rows}


def complexity_row(c) -> dict:
    """A ``latentstore.models.complexity.Complexity`` as JSON: params, MACs, median latency and how it was taken."""
    out = {"model": c.name, "input": c.input_shape, "params": c.params, "macs": c.macs}
    for name, lat in (("cpu", c.cpu), ("gpu", c.gpu)):
        if lat is not None:
            out[f"{name}_ms"] = lat.median_ms
            out[f"{name}_latency"] = {"runs": lat.runs, "warmup": lat.warmup, "threads": lat.threads,
                                      "statistic": "median", "batch": 1}
    return out


def plot(records: list[dict], out, paper: bool = False, latency: bool = False,
         complexity: dict | None = None, latency_device: str = "cpu") -> Path:
    """Write a PNG: rate–accuracy and/or rate–mIoU panels (+ an accuracy–latency panel with ``latency``)."""
    try:
        import matplotlib
    except ImportError as exc:   # not in the base install: the [plot] extra brings it
        raise ConfigError("plotting needs matplotlib, which the base install leaves out: "
                          "pip install 'latentstore[plot]' (or pip install matplotlib)") from exc
    matplotlib.use("Agg")  # files only: no display on cluster nodes
    import matplotlib.pyplot as plt

    tasks = [t for t in METRIC if any(r["task"] == t for r in records)]
    if not tasks:
        raise ConfigError("no eval records to plot")
    panels = [("rate", t) for t in tasks] + ([("latency", "classification")] if latency else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.8), squeeze=False)
    colors = {}
    for ax, (kind, task) in zip(axes[0], panels):
        key, label = METRIC[task]
        recs = [r for r in records if r["task"] == task]
        if kind == "rate":
            _rate_panel(ax, recs, key, paper and task in PAPER, task, colors)
            ax.set_xlabel("rate (bpp, stored bitstreams)")
            ax.set_title(f"rate–{'accuracy' if task == 'classification' else 'mIoU'}")
        else:
            _latency_panel(ax, recs, key, complexity or {}, latency_device, colors)
            ax.set_xlabel(f"{latency_device.upper()} latency (ms, batch 1, median)")
            ax.set_title("accuracy–latency")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _color(colors: dict, method: str):
    import matplotlib.pyplot as plt

    if method not in colors:
        colors[method] = plt.rcParams["axes.prop_cycle"].by_key()["color"][len(colors) % 10]
    return colors[method]


def _rate_panel(ax, recs, key, paper, task, colors):
    by_method: dict = {}
    for r in recs:
        by_method.setdefault(r["method"], []).append((r["bpp"], r[key]))
    for method, pts in by_method.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=_color(colors, method), label=method)
    if paper:
        for method, vals in PAPER[task].items():
            ax.plot(PAPER_BPP, vals, "x--", alpha=0.6, color=_color(colors, method), label=f"{method} (paper)")


def _latency_panel(ax, recs, key, complexity, device, colors):
    for r in recs:
        ms = latency_of(r, complexity, device)
        if ms is None:
            continue
        ax.scatter([ms], [r[key]], color=_color(colors, r["method"]), label=f"{r['method']} @ {r['bpp']:.3f} bpp")
    if not ax.collections:
        ax.text(0.5, 0.5, "no latency figures: run eval with --complexity\nor pass --complexity FILE.json",
                ha="center", va="center", transform=ax.transAxes)


def per_class_table(record: dict) -> str:
    """Per-class IoU (%) of a segmentation record, one row per class, then the mean."""
    lines = ["| class | IoU (%) |", "|---|---|"]
    ious = record["per_class_iou"]
    lines += [f"| {name} | {_fmt(ious[name])} |" for name in record.get("classes") or ious]
    lines.append(f"| **mean (mIoU)** | **{_fmt(record['miou'])}** |")
    return "\n".join(lines)
