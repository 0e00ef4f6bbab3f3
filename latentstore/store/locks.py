"""Locks and per-process temporary names: what keeps concurrent writers of one store apart.

Every lock is an ``fcntl.flock`` on a file under ``parts/`` (verify knows them as ``.lock-*``); the
kernel drops it when its process dies, so a killed command never leaves a store locked.

- ``manifest_lock``: held around every read-modify-write of ``manifest.json`` and the part manifests
  (seal, a build's part manifest, convert, add-teacher); writers wait for each other.
- ``part_lock_path``: a build (or add-teacher) holds its (split, part) lock while it writes shards;
  seal refuses a part whose lock is held, and a reader that meets a changing shard says a write is
  under way (``write_in_progress``) instead of calling the shard damaged.
- ``temp_name``/``is_stale_temp``: temporaries carry their process id and a random token, so a
  writer cleaning up after a killed attempt removes only temporaries of dead processes.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
from pathlib import Path

LOCKS_DIR = "parts"
_MANIFEST_LOCK = ".lock-manifest"
_TEMP_OWNER = re.compile(r"\.tmp-(?P<pid>\d+)(?:-[0-9a-f]+)?$")


def part_lock_path(store, split: str, part: int, parts: int) -> Path:
    return Path(store) / LOCKS_DIR / f".lock-{split}-part-{part:04d}-of-{parts:04d}"


_HELD: dict = {}  # manifest lock path -> how deep this process holds it (seal runs inside a caller's hold)


@contextlib.contextmanager
def manifest_lock(store):
    """Hold the store's manifest lock (waiting for another holder) for one read-modify-write."""
    path = (Path(store) / LOCKS_DIR / _MANIFEST_LOCK).resolve()
    if _HELD.get(path):
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        _HELD[path] = 1
        try:
            yield
        finally:
            _HELD.pop(path, None)
            fcntl.flock(f, fcntl.LOCK_UN)


def is_locked(path: Path) -> bool:
    """Whether another open file (another process, or another holder in this one) holds `path`'s lock."""
    try:
        f = open(path)
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def write_in_progress(store) -> str | None:
    """A sentence naming the build or add-teacher writing into `store` now, or None (checked only when a
    read fails: one flock probe per lock file)."""
    folder = Path(store) / LOCKS_DIR
    held = [p.name.removeprefix(".lock-") for p in sorted(folder.glob(".lock-*-part-*"))
            if is_locked(p)] if folder.is_dir() else []
    if not held:
        return None
    return (f"a build or add-teacher is writing into {store} right now ({', '.join(held)}): wait for it to finish "
            "and read again")


def temp_name(path: Path) -> Path:
    """A temporary name beside `path` that no other process (or earlier attempt) uses."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def is_stale_temp(path: Path) -> bool:
    """Whether temporary `path` was left by a process that is gone (its pid dead, or no pid in its name)."""
    match = _TEMP_OWNER.search(path.name)
    return match is None or not pid_alive(int(match["pid"]))
