"""Run logging on rank 0: a progress bar with samples/s, scalars to metrics.csv and TensorBoard events."""
from __future__ import annotations

import csv
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


class RunLog:
    """What rank 0 shows and writes; other ranks get a RunLog that does nothing."""

    def __init__(self, out, main: bool, total_steps: int, first_step: int, progress: bool = True):
        self.main = main
        self.bar = tqdm(total=total_steps, initial=first_step, unit="step", disable=not (main and progress),
                        dynamic_ncols=True, smoothing=0.05)
        self.csv = self.events = None
        if main:
            path = Path(out) / "metrics.csv"
            new = not path.is_file()
            if not new:
                _drop_rows_after(path, first_step)
            self.csv_file = open(path, "a", newline="")
            self.csv = csv.writer(self.csv_file)
            if new:
                self.csv.writerow(["step", "epoch", "name", "value"])
            # purge_step: TensorBoard hides what an earlier run logged after the step this one resumes from
            self.events = SummaryWriter(out, purge_step=first_step + 1 if first_step else None)

    def step(self, samples_per_s: float, loss: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix_str(f"loss {loss:.4f}  {samples_per_s:,.0f} samples/s", refresh=False)

    def scalars(self, step: int, epoch: int, values: dict) -> None:
        if not self.main:
            return
        for name, value in values.items():
            self.csv.writerow([step, epoch, name, repr(float(value))])
            self.events.add_scalar(name, float(value), step)
        self.csv_file.flush()
        self.events.flush()  # on disk with its metrics.csv rows, should the run be killed

    def message(self, text: str) -> None:
        if self.main:
            self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
        if self.main:
            self.csv_file.close()
            self.events.close()


def _drop_rows_after(path: Path, step: int) -> None:
    """Remove the rows of steps after `step`, logged by a run stopped before it saved them in a
    checkpoint: the resumed run logs those steps again, and metrics.csv holds each step once."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
    if len(kept) == len(rows):
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(kept)
    tmp.replace(path)


def last_metrics(out) -> tuple[int, int, dict] | None:
    """(step, epoch, {name: value}) of the last step in OUT/metrics.csv, or None if nothing was logged."""
    path = Path(out) / "metrics.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    step = max(int(r["step"]) for r in rows)
    last = [r for r in rows if int(r["step"]) == step]
    return step, int(last[-1]["epoch"]), {r["name"]: float(r["value"]) for r in last}


def summary(out, headline: str) -> str:
    """What a finished (or stopped) run tells its user: the last logged metrics and the files it wrote."""
    out = Path(out)
    lines = [headline]
    metrics = last_metrics(out)
    if metrics is not None:
        step, epoch, values = metrics
        shown = "  ".join(f"{k} {v:.4g}" for k, v in values.items() if k not in ("skipped", "data_wait"))
        lines.append(f"  last step {step}: {shown}")
    events = sorted(out.glob("events.out.tfevents.*"))
    for label, path in (("checkpoint", out / "last.pt"), ("best", out / "best.pt"), ("config", out / "args.yaml"),
                        ("metrics", out / "metrics.csv"),
                        ("tensorboard", out if events else None)):
        if path is not None and path.exists():
            lines.append(f"  {label:<12} {path}" + ("  (tensorboard --logdir this folder)" if label == "tensorboard"
                                                    else ""))
    return "\n".join(lines)


def finished(cfg, step: int, epoch: int) -> bool:
    """True once a run at (step, epoch) has nothing left to do under `cfg` (a TrainConfig)."""
    return epoch >= cfg.epochs or bool(cfg.max_steps) and step >= cfg.max_steps


def headline(cfg, step: int, epoch: int, rerun: bool = False) -> str:
    """One line on where a run stands: done, stopped by --max-steps, or finished before this rerun."""
    where = f"{step} steps, {min(epoch, cfg.epochs)} of {cfg.epochs} epochs"
    if rerun:
        return (f"{cfg.out} has already finished ({where}): nothing to do. Raise --epochs"
                f"{' or --max-steps' if cfg.max_steps else ''} to train on, or pass a new --out to start over.")
    if epoch >= cfg.epochs:
        return f"finished: {where}"
    return f"stopped at --max-steps {cfg.max_steps} ({where}); rerun with a larger --max-steps to go on"
