"""Clean stops: SIGINT, SIGTERM and SIGUSR1 (SLURM's warning) ask a run to stop after the current step.

The training loop polls `StopRequest.signal` between steps; once it is set, the
loop saves a checkpoint and ends with `Stopped`, whose message is one line with
the command that resumes the run. A second Ctrl-C while it saves still stops at once.
"""
from __future__ import annotations

import shlex
import signal
import sys
import threading

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name))


class Stopped(Exception):
    """A run stopped on a signal after saving its checkpoint; `code` is the exit status (128 + signal)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class StopRequest:
    """Installs the handlers while a run trains (main thread only) and restores the old ones after."""

    def __init__(self):
        self.signal: int | None = None
        self._old: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signal == signal.SIGINT:
            raise KeyboardInterrupt   # Ctrl-C twice: the user wants out now
        self.signal = signum

    def stopped(self, step: int, checkpoint) -> Stopped:
        name = signal.Signals(self.signal).name
        command = shlex.join([sys.executable if sys.argv[0].endswith(".py") else "", *sys.argv]).strip()
        return Stopped(f"stopped by {name} after step {step}, checkpoint {checkpoint}; "
                       f"to resume, rerun the same command: {command}", 128 + self.signal)
