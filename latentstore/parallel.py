"""Run a build's item groups in K encoder processes: `latentstore build --encoders K`.

Processes, not threads: everything stored runs at threads.STORE_THREADS
(docs/benchmarks.md, "Throughput knobs"), and the autoregressive coders' serial
loop of tiny convolutions could not use more threads anyway, so one encoder
keeps about one core busy and N cores take N processes. A group's bytes depend
only on its images and the build arguments, never on which process made it or
in which order pieces finish, so the store is byte-identical to a
single-process build.

The processes are spawned, not forked: torch's OpenMP runtime (libgomp) is not
fork-safe once the parent has run a parallel region, and a forked child can
hang in its first multi-threaded op. So each process loads the coder itself
(``setup``).
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor

import torch

_JOB = _STATE = _PROGRESS = None  # per encoder process, set by _init


class _Progress:
    """What a job sees as its progress bar: update(n) is sent to the parent's bar."""

    def update(self, n: int) -> None:
        _PROGRESS.put(n)


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when `parent` dies (Linux), else exit now if it is gone.

    Nothing runs in a parent killed with SIGKILL, so no executor can stop its
    processes then; they would encode on for nobody.
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (_submit_ignoring_ctrl_c)
    # Setup (load_coder's entropy tables) runs at the parent's thread count: the tables' floats
    # depend on it. The jobs' stored work runs at threads.STORE_THREADS whatever is set, and the
    # rest is elementwise, so one thread each keeps N processes from oversubscribing N cores.
    torch.set_num_threads(threads)
    _JOB, _PROGRESS = job, progress
    try:
        _STATE = setup(*setup_args)
    except Exception as exc:  # an executor whose initializer raises breaks without this exception
        _STATE = exc
    torch.set_num_threads(1)


def _run(task):
    if isinstance(_STATE, Exception):
        raise _STATE
    return _JOB(_STATE, task, _Progress())


def _stop(pool: ProcessPoolExecutor) -> None:
    """End the processes now; the tasks not started fail with the broken pool.

    ``shutdown`` alone lets running tasks finish, which could take minutes
    (Python 3.14's ``terminate_workers`` does what this does). No
    ``cancel_futures``: cancelling queued tasks while others run can leave
    ``shutdown`` waiting forever (CPython issue 94440); terminated processes
    break the pool, which fails every pending task at once.
    """
    for process in list((pool._processes or {}).values()):
        process.terminate()
    pool.shutdown(wait=True)


def _submit_ignoring_ctrl_c(pool: ProcessPoolExecutor, tasks: list) -> list:
    """Submit every task; the processes this starts ignore SIGINT from birth.

    Ctrl-C reaches the whole process group, and a process still importing
    torch would die of it with a traceback of its own; the parent stops them
    all instead. A spawned Python keeps an inherited SIG_IGN for SIGINT.
    """
    if threading.current_thread() is not threading.main_thread():  # signal.signal works only there
        return [pool.submit(_run, task) for task in tasks]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return [pool.submit(_run, task) for task in tasks]
    finally:
        signal.signal(signal.SIGINT, previous)


def run_in_processes(job, setup, setup_args: tuple, tasks: list, processes: int, threads: int,
                     on_progress=None):
    """Yield ``job(state, task, progress)`` for each task, in order, run in `processes` spawned processes.

    ``state = setup(*setup_args)`` runs once per process. `job` and `setup`
    must be module-level functions; tasks, setup_args and results must pickle.
    ``progress.update(n)`` inside a job calls ``on_progress(n)`` here. The
    first job that raises stops the rest (terminated: what they had not
    returned is lost, as after a crash) and its exception is raised here; so
    does closing the generator early.
    """
    if not tasks:
        return
    ctx = multiprocessing.get_context("spawn")
    updates = ctx.Queue()
    pool = ProcessPoolExecutor(min(processes, len(tasks)), mp_context=ctx, initializer=_init,
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
        futures = _submit_ignoring_ctrl_c(pool, tasks)
        for future in futures:
            while not future.done():
                drain(0.2)
            yield future.result()
        pool.shutdown(wait=True)
        drain(0)
    finally:
        _stop(pool)
