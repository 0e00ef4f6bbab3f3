"""The build's one process pool: item groups in K encoder processes (`--encoders K`), and images
decoded ahead of the encoder in N processes (`--workers N`).

Why processes and not threads: everything stored runs at one intra-op thread
(below), and the autoregressive coders' serial loop of tiny convolutions could
not use more anyway. One encoder keeps about one core busy, so the way to use
N cores is N encoders in N processes.

Each process runs torch at one thread; everything stored runs at
threads.STORE_THREADS anyway (the thread count changes a convolution's last
bits), so no process can change the store. A
group's bytes depend only on its images and the build arguments, never on
which process made it or in which order groups finish, so the store is
byte-identical to a single-process build.

The processes are spawned, not forked: torch's OpenMP (libgomp) is not
fork-safe once the parent has run a parallel region with more than one thread,
and a forked child can then hang in its first multi-threaded op. So each
process loads the coder itself (``setup``), a few seconds once per process.

A hand-written pool: each process has its own pipe to the parent, the parent
hands it one task at a time and waits on every pipe and every process's
sentinel at once. So a process that dies (the kernel's out-of-memory killer, a
crash) stops the build within moments, with an error that says how it died;
``multiprocessing.Pool`` starts a replacement and waits forever for the task
the dead process held. Not ``concurrent.futures.ProcessPoolExecutor`` either:
stopping it on Ctrl-C, with tasks queued and others running, needs terminating
its processes, and the executor's shutdown then hung in this project's test
suite (docs/benchmarks.md, "Throughput knobs").

Ctrl-C: the processes are started with SIGINT ignored (a terminal sends it to
the whole process group, and each would print its own traceback); the
parent's KeyboardInterrupt terminates them. Whatever was not committed is
lost, as after a crash, and a rerun of the same command resumes.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait

from ..errors import BuildError


class _Progress:
    """What a job sees as its progress bar: update(n) is sent to the parent's bar."""

    def __init__(self, conn):
        self._conn = conn

    def update(self, n: int) -> None:
        self._conn.send(("progress", n))


class RemoteTraceback(Exception):
    """Where a job's exception was raised in its encoder process (set as the exception's __cause__)."""

    def __str__(self) -> str:
        return self.args[0]


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when `parent` dies (Linux), else exit now if it is gone.

    The encoder processes otherwise outlive a parent killed with SIGKILL (nothing
    runs in the parent to stop them) and keep encoding what they hold.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # died before the prctl took effect
        os._exit(1)


def _portable(exc: Exception) -> Exception:
    """`exc` if it survives pickling (the parent re-raises it as is), else a RuntimeError that names it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _pool_process(conn, job, setup, setup_args, parent: int, role: Role) -> None:
    """One process of a pool: set up, then run the tasks the parent sends until it sends None (or goes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # already, unless started from another thread than main's
    die_with_parent(parent)
    if role.torch:
        # One thread from the start: N processes at the parent's count would run N x cores OpenMP
        # threads while they load. The coder's entropy tables do not depend on the thread count
        # (tests/test_coders.py), and the jobs' stored work runs at threads.STORE_THREADS.
        import torch

        torch.set_num_threads(1)
    try:
        state, failed = setup(*setup_args), None
    except Exception as exc:  # raised from each job, so the parent raises it in task order
        state, failed = None, exc
    progress = _Progress(conn)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if message is None:
            return
        index, task = message
        try:
            if failed is not None:
                raise failed
            reply = ("done", index, job(state, task, progress))
        except Exception as exc:
            reply = ("error", index, _portable(exc), traceback.format_exc())
        try:
            conn.send(reply)
        except OSError:  # the parent is gone
            return
        except Exception as exc:  # the result does not pickle (nothing was sent)
            conn.send(("error", index, _portable(exc), traceback.format_exc()))


class _Worker:
    """The parent's handle on one process: its pipe, and the task it holds (None when idle)."""

    def __init__(self, number: int, process, conn, role: Role):
        self.number, self.process, self.conn, self.role = number, process, conn, role
        self.task = None

    def died(self, count: int) -> BuildError:
        self.process.join(5)  # its pipe closes as it exits: let the exit status come
        code = self.process.exitcode
        if code is None:
            how = "closed its pipe"
        elif code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        if self.task is not None:
            how += f" while {self.role.doing}"
        if code is not None and -code == getattr(signal, "SIGKILL", None):
            how += " (probably by the kernel's out-of-memory killer)"
        return BuildError(f"{self.role.name.capitalize()} process {self.number} of {count} (pid {self.process.pid}) "
                          f"{how}; the build stopped and nothing partial was committed. Rerun the same command: "
                          f"committed groups are kept and the build resumes. If memory is short, lower "
                          f"{self.role.flag} or --batch-size.")


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore SIGINT here while processes are started, so that they inherit it ignored (main thread only)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _stop(workers: list, politely: bool) -> None:
    """End every process: ask them to exit (when all went well), then terminate, then kill what is left."""
    if politely:
        for w in workers:
            with contextlib.suppress(OSError):
                w.conn.send(None)
        deadline = time.monotonic() + 5
        for w in workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
    for w in workers:
        if w.process.exitcode is None:
            w.process.terminate()
    deadline = time.monotonic() + 5
    for w in workers:
        w.process.join(max(0.0, deadline - time.monotonic()))
        if w.process.exitcode is None:
            w.process.kill()
            w.process.join()
        w.conn.close()


@dataclass(frozen=True)
class Role:
    """What the processes of one pool do, for their names and the error when one dies."""
    name: str    # "encoder"
    doing: str   # "encoding"
    flag: str    # the option that sets how many: "--encoders"
    torch: bool  # runs torch: one thread from the start (decoders never import it: they start faster)


ENCODERS = Role("encoder", "encoding", "--encoders", torch=True)
DECODERS = Role("decode", "decoding", "--workers", torch=False)


def run_in_processes(job, setup, setup_args: tuple, tasks: list, processes: int,
                     on_progress=None, ahead: int | None = None, role: Role = ENCODERS):
    """Yield ``job(state, task, progress)`` for each task, in order, run in `processes` spawned processes.

    ``state = setup(*setup_args)`` runs once per process. `job` and `setup`
    must be module-level functions; tasks, setup_args and results must pickle.
    ``progress.update(n)`` inside a job calls ``on_progress(n)`` here. The
    first job that raises stops the rest (terminated: what they had not
    committed is lost, as after a crash) and its exception is raised here when
    its turn comes. A process that dies raises BuildError at once. Closing the
    generator early (or Ctrl-C) terminates the processes. With `ahead`, no task is handed out more
    than `ahead` places beyond the result the caller takes next: results wait in memory, so a slow
    caller bounds how far fast processes run ahead of it.
    """
    if not tasks:
        return
    ctx = multiprocessing.get_context("spawn")
    workers: list[_Worker] = []
    todo = list(enumerate(tasks))[::-1]  # popped from the end: handed out in task order
    results: dict = {}
    first_error = len(tasks)  # no task after a failed one is started
    finished = False
    taken = 0  # results the caller has taken

    def hand_out() -> None:
        limit = first_error if ahead is None else min(first_error, taken + ahead)
        for w in workers:
            if w.task is None and todo and todo[-1][0] < limit:
                w.task, task = todo.pop()
                try:
                    w.conn.send((w.task, task))
                except OSError:
                    raise w.died(len(workers)) from None

    def receive(w: _Worker) -> None:
        nonlocal first_error
        try:
            while w.conn.poll():
                message = w.conn.recv()
                if message[0] == "progress":
                    if on_progress is not None:
                        on_progress(message[1])
                    continue
                results[message[1]] = message
                w.task = None
                if message[0] == "error":
                    first_error = min(first_error, message[1])
        except (EOFError, OSError):
            raise w.died(len(workers)) from None
        if w.process.exitcode is not None:
            raise w.died(len(workers))

    def serve(timeout) -> None:
        hand_out()
        ready = set(wait([w.conn for w in workers] + [w.process.sentinel for w in workers], timeout))
        for w in workers:
            if w.conn in ready or w.process.sentinel in ready:
                receive(w)
        hand_out()

    try:
        with _sigint_ignored():
            for number in range(1, min(processes, len(tasks)) + 1):
                here, there = ctx.Pipe()
                process = ctx.Process(target=_pool_process, name=f"latentstore-{role.name}-{number}", daemon=True,
                                      args=(there, job, setup, setup_args, os.getpid(), role))
                try:
                    process.start()
                finally:
                    there.close()  # the process's end: held by it alone, so its death reads as end of file here
                workers.append(_Worker(number, process, here, role))
        for index in range(len(tasks)):
            serve(0)  # what came while the caller worked on the last result
            while index not in results:
                serve(None)
            message = results.pop(index)
            taken = index + 1
            if message[0] == "error":
                _, _, exc, text = message
                exc.__cause__ = RemoteTraceback(text)
                raise exc
            yield message[2]
        finished = True
    finally:
        _stop(workers, politely=finished)
