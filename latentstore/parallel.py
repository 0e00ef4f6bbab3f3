"""Run a build's item groups in K encoder processes: `latentstore build --encoders K`.

Why processes and not threads: everything stored runs at one intra-op thread
(below), and the autoregressive coders' serial loop of tiny convolutions could
not use more anyway. One encoder keeps about one core busy, so the way to use
N cores is N encoders in N processes.

Each process runs torch at the parent's thread count for whatever is not
stored; everything stored runs at threads.STORE_THREADS (the thread count
changes a convolution's last bits), so no process can change the store. A
group's bytes depend only on its images and the build arguments, never on
which process made it or in which order groups finish, so the store is
byte-identical to a single-process build.

The processes are spawned, not forked: torch's OpenMP (libgomp) is not
fork-safe once the parent has run a parallel region with more than one thread,
and a forked child can then hang in its first multi-threaded op. So each
process loads the coder itself (``setup``), a few seconds once per process.

A hand-written pool rather than ``concurrent.futures.ProcessPoolExecutor``:
stopping it on Ctrl-C, with tasks queued and others running, needs terminating
its processes, and the executor's shutdown then hung in this project's test
suite (docs/benchmarks.md, "Throughput knobs").
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import sys

import torch

_JOB = _STATE = _PROGRESS = None  # per encoder process, set by _init


class _Progress:
    """What a job sees as its progress bar: update(n) is sent to the parent's bar."""

    def update(self, n: int) -> None:
        _PROGRESS.put(n)


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when `parent` dies (Linux), else exit now if it is gone.

    A Pool's workers otherwise outlive a parent killed with SIGKILL (nothing runs
    in the parent to stop them) and keep taking work from the queue they hold.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # died before the prctl took effect
        os._exit(1)


def _init(job, setup, setup_args, progress, threads: int, parent: int) -> None:
    global _JOB, _STATE, _PROGRESS
    die_with_parent(parent)
    # Setup (load_coder's entropy tables) runs at the parent's thread count: the tables'
    # floats depend on it. The jobs' stored work runs at threads.STORE_THREADS whatever is
    # set, and the rest is elementwise, so afterwards one thread each keeps N processes
    # from running N x threads OpenMP threads on N cores.
    torch.set_num_threads(threads)
    _JOB, _PROGRESS = job, progress
    try:
        _STATE = setup(*setup_args)
    except Exception as exc:  # raised from the first job: a Pool respawns processes whose initializer fails
        _STATE = exc
    torch.set_num_threads(1)


def _run(task):
    if isinstance(_STATE, Exception):
        raise _STATE
    return _JOB(_STATE, task, _Progress())


def run_in_processes(job, setup, setup_args: tuple, tasks: list, processes: int, threads: int,
                     on_progress=None):
    """Yield ``job(state, task, progress)`` for each task, in order, run in `processes` spawned processes.

    ``state = setup(*setup_args)`` runs once per process. `job` and `setup`
    must be module-level functions; tasks, setup_args and results must pickle.
    ``progress.update(n)`` inside a job calls ``on_progress(n)`` here. The
    first job that raises stops the rest (terminated: what they had not
    committed is lost, as after a crash) and its exception is raised here.
    """
    if not tasks:
        return
    ctx = multiprocessing.get_context("spawn")
    updates = ctx.Queue()
    pool = ctx.Pool(min(processes, len(tasks)), initializer=_init,
                    initargs=(job, setup, setup_args, updates, threads, os.getpid()))

    def drain(timeout: float) -> None:
        try:
            n = updates.get(timeout=timeout) if timeout else updates.get_nowait()
            while True:
                if on_progress is not None:
                    on_progress(n)
                n = updates.get_nowait()
        except queue.Empty:
            pass

    try:
        results = [pool.apply_async(_run, (task,)) for task in tasks]
        for result in results:
            while not result.ready():
                drain(0.2)
            yield result.get()
        pool.close()
        pool.join()
        drain(0)
    finally:
        pool.terminate()
