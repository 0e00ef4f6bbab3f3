"""Checksums of the files a commit record lists: sha256 for audits, CRC-32C for every read.

Each committed file (a tar shard, a Zarr chunk file) is recorded with two
digests, taken as it is written:

- ``sha256``: what `verify`, `convert` and `add-teacher` check. No edit can
  keep it, so a store that passes them holds exactly the bytes its build wrote.
  They then read the file with ``check_digest=False``: one digest pass per file.
- ``crc32c``: what readers check the first time a process reads a file. The
  Castagnoli CRC catches every burst of damage up to 32 bits long and any other
  random damage with probability 1 - 2^-32, which is the reader's threat
  (a flipped byte, a torn copy), not a deliberate edit. With the SSE4.2 / ARMv8
  CRC instructions (google-crc32c's C build) it runs at about 5x sha256's
  speed, so checking every byte costs a first epoch only a few percent
  (docs/benchmarks.md, "Integrity on read"). A tar shard's sample index
  holds a CRC-32C per sample as well, which readers check instead of the
  whole file's (store/tar/index.py).

A machine where google-crc32c has only its pure-Python fallback checks the
sha256 instead: slower, never less sound.
"""
from __future__ import annotations

import hashlib
import os

import google_crc32c

#: CRC-32C only where it is the fast one: the pure-Python fallback is far slower than sha256 in C.
CRC32C_IS_FAST = google_crc32c.implementation == "c"


class Digests:
    """Incremental sha256 + CRC-32C + length of bytes written in order."""

    def __init__(self):
        self._sha256 = hashlib.sha256()
        self._crc32c = google_crc32c.Checksum()
        self.nbytes = 0

    def update(self, data) -> None:
        self._sha256.update(data)
        self._crc32c.update(data)
        self.nbytes += len(data)

    def record(self) -> dict:
        """{"bytes", "sha256", "crc32c"}: a commit record's entry for the file."""
        return {"bytes": self.nbytes, "sha256": self._sha256.hexdigest(),
                "crc32c": self._crc32c.hexdigest().decode()}


def file_record(path) -> dict:
    """{"bytes", "sha256", "crc32c"} of a file on disk."""
    digests = Digests()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digests.update(block)
    return digests.record()


#: Read size of the check: blocks small enough to stay in the CPU cache between the copy and
#: the digest (docs/benchmarks.md, "Integrity on read").
_CHECK_BLOCK = 128 << 10


def read_check(path, record: dict) -> bool:
    """Whether a file's bytes match its record, by the cheapest sound digest it holds."""
    with open(path, "rb", buffering=0) as f:
        blocks = iter(lambda: f.read(_CHECK_BLOCK), b"")
        if CRC32C_IS_FAST:
            crc = 0
            for block in blocks:
                crc = google_crc32c.extend(crc, block)
            return f"{crc:08x}" == record["crc32c"]
        h = hashlib.sha256()
        for block in blocks:
            h.update(block)
        return h.hexdigest() == record["sha256"]


#: (path, size, mtime_ns, sha256) of the files whose digest matched in this process
_CHECKED: set = set()


def check_once(path, record: dict) -> bool:
    """`read_check`, once per process and file: a file that matched is remembered by path, size and
    mtime, so later epochs read it without a second pass; a changed file gets a new mtime, and the
    check then runs again."""
    st = os.stat(path)
    memo = (str(path), st.st_size, st.st_mtime_ns, record["sha256"])
    if memo not in _CHECKED:
        if not read_check(path, record):
            return False
        _CHECKED.add(memo)
    return True


def audit(path, record: dict) -> bool:
    """Whether a file has its recorded size and both digests (sha256, crc32c)."""
    actual = file_record(path)
    return all(actual[name] == record.get(name) for name in ("bytes", "sha256", "crc32c"))


def file_problem(path, record: dict, digests: bool = False) -> str | None:
    """Why a recorded file cannot be used as it is, or None: it "is missing", "has N bytes, its record
    says M", or (with `digests`, which reads it whole) "differs from its record (checksum)"."""
    if not os.path.isfile(path):
        return "is missing"
    size = os.path.getsize(path)
    if size != record["bytes"]:
        return f"has {size} bytes, its record says {record['bytes']}"
    if digests and not audit(path, record):
        return "differs from its record (checksum)"
    return None
