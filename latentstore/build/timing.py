"""Where a build's time went, per stage: `latentstore build --profile`.

A `Profiler` sums wall time (``time.perf_counter``) per named stage::

    prof = Profiler()
    with prof.stage("g_a"):
        y = model.g_a(x)
    print(prof.render(total=elapsed))

Disabled (``Profiler(enabled=False)``, or ``None`` passed where a profiler is
optional) ``stage()`` hands back one shared no-op context: no clock reads, no
allocation, so the hot loops can keep their ``with`` blocks unconditionally.

Stages measured in other processes (decode workers, encoder processes) come
back as plain ``{stage: [seconds, calls]}`` dicts (`snapshot`) and are added
with `merge`, marked with where they ran: time spent in parallel processes
overlaps the main process's, so the shares are of summed stage time, not of
the build's wall time.
"""
from __future__ import annotations

import contextlib
import time

# Report order; stages not listed here follow in the order they were first seen.
STAGES = ("read/decode", "augment", "wait for decode", "g_a", "hyper", "autoregressive loop",
          "rANS", "teacher", "serialize", "write")

_NULL = contextlib.nullcontext()


class Profiler:
    """Summed wall seconds and call counts per stage; near-zero cost when disabled."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.totals: dict[str, list] = {}   # stage -> [seconds, calls]
        self.where: dict[str, str] = {}     # stage -> "main" / "workers" / ...

    def stage(self, name: str):
        """Context manager timing one occurrence of `name` (a shared no-op when disabled)."""
        return _Timer(self, name) if self.enabled else _NULL

    def add(self, name: str, seconds: float, calls: int = 1, where: str = "main") -> None:
        entry = self.totals.setdefault(name, [0.0, 0])
        entry[0] += seconds
        entry[1] += calls
        self.where.setdefault(name, where)

    def snapshot(self) -> dict:
        """The totals as a plain dict, to send back from another process."""
        return {k: list(v) for k, v in self.totals.items()}

    def merge(self, totals: dict | None, where: str = "main") -> None:
        """Add a `snapshot` taken in another process (None: nothing was measured)."""
        for name, (seconds, calls) in (totals or {}).items():
            self.add(name, seconds, calls, where)

    def render(self, total: float | None = None, images: int | None = None) -> str:
        """A table: stage, where it ran, calls, seconds, ms per call, share of all stage time."""
        order = [s for s in STAGES if s in self.totals] + [s for s in self.totals if s not in STAGES]
        summed = sum(self.totals[s][0] for s in order) or 1.0
        rows = [f"{'stage':<22}{'where':<10}{'calls':>8}{'seconds':>10}{'ms/call':>10}{'share':>8}"]
        for s in order:
            seconds, calls = self.totals[s]
            rows.append(f"{s:<22}{self.where.get(s, 'main'):<10}{calls:>8}{seconds:>10.2f}"
                        f"{1000 * seconds / max(calls, 1):>10.1f}{100 * seconds / summed:>7.1f}%")
        if total is not None:
            line = f"build wall time {total:.2f} s"
            if images:
                line += f", {images} samples, {images / total:.2f} samples/s"
            rows.append(line + " (stages in parallel processes overlap it)")
        return "\n".join(rows)


class _Timer:
    __slots__ = ("prof", "name", "start")

    def __init__(self, prof: Profiler, name: str):
        self.prof, self.name = prof, name

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.prof.add(self.name, time.perf_counter() - self.start)
        return False


def stage(prof: Profiler | None, name: str):
    """`prof.stage(name)`, or a no-op when prof is None."""
    return _NULL if prof is None else prof.stage(name)
