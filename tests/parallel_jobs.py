"""Module-level setup and job functions for tests/test_parallel.py (spawned processes import them by name)."""
import os
import time

MARK = None    # the parent sets it; a spawned process imports this module afresh and sees None
SETUPS = 0     # setups run in this process


def setup(kind):
    global SETUPS
    if kind == "fail":
        raise RuntimeError("setup failed: no coder here")
    SETUPS += 1
    return kind


def job(state, task, progress):
    """(task², pid, MARK, setups so far, state); "boom" raises, a float sleeps that long first."""
    if task == "boom":
        raise ValueError(f"bad task {task!r}")
    if isinstance(task, float):
        time.sleep(task)
    progress.update(1)
    progress.update(2)
    return task * task, os.getpid(), MARK, SETUPS, state
