"""A store at a URL, read through a local mirror of it (the Remote), filled file by file on first use.

The small files (manifest, commit records, sample indexes, Zarr array descriptions) are fetched when the
store is opened, each shard file in one whole-file request when a reader first needs it (of a Zarr unit,
only the chunk files of the arrays the reader reads). So every reader keeps reading local files with its
own checks (counts, fields), and object storage sees few large requests instead of one per sample. A
file is checked against its manifest record (size, CRC-32C) before it enters the mirror; its readers in
the same job take that check for their per-sample one, and a file cached by an earlier job is checked
sample by sample once per process, as a local store's (`Remote.checked_on_arrival`).

The mirror lives under ``$LATENTSTORE_CACHE`` (default ``~/.cache/latentstore/stores``), one folder per
(URL, manifest digest), so a republished store never reads a stale file; least recently used files
are evicted above ``$LATENTSTORE_CACHE_GB`` (default 50), down to 90% of it.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreError
from .location import MANIFEST, Location, check_bytes, is_url, shown
from .paths import check_recorded, shard_files
from .sample import ReadError

PREFETCH_THREADS = 2  # shards fetched ahead at a time
FILE_THREADS = 8      # files of those shards (and of the one being read) fetched at a time
SMALL_FILE_THREADS = 16
USAGE = "usage.json"  # the cache's recorded size, in its root folder
LOW_WATER = 0.9       # a full cache is evicted down to this fraction of its limit


class Remote(Location):
    """A store at a URL, mirrored file by file into a local cache folder.

    A file that arrives with its recorded size but another CRC-32C (damaged in the bucket) is refused in one
    line naming its URL; with `keep_damaged` (a lenient reader: ``max_skips > 0``) it enters the mirror marked
    damaged (mtime 0) instead, so that its readers check it sample by sample and skip the damaged samples
    as they do a local store's. A strict reader fetches a file so marked again, and refuses it."""

    def __init__(self, url: str, storage_options: dict | None = None, cache_dir=None, keep_damaged: bool = False):
        super().__init__(url, storage_options)
        self.keep_damaged = keep_damaged
        default = Path.home() / ".cache" / "latentstore" / "stores"
        self.cache = Path(cache_dir or os.environ.get("LATENTSTORE_CACHE") or default)
        self.limit = int(float(os.environ.get("LATENTSTORE_CACHE_GB", "50")) * 2**30)
        manifest = self.read(MANIFEST)
        digest = hashlib.sha256(self.shown.encode() + b"\0" + manifest).hexdigest()[:24]
        self.mirror = self.cache / digest
        self.opened_ns = time.time_ns()  # files of the mirror newer than this were checked on arrival here
        self._put(MANIFEST, manifest)
        self._pool, self._file_pool, self._pending, self._pool_pid = None, None, {}, None
        self._pins, self._pins_lock = {}, threading.Lock()  # rel -> its lock file, held shared
        self._over = False  # the last trim left the cache above its limit (pinned files)

    def __getstate__(self):  # a worker holds its own pins and threads
        return {**super().__getstate__(), "_pool": None, "_file_pool": None, "_pending": {}, "_pool_pid": None,
                "_pins": {}, "_pins_lock": None}

    def __setstate__(self, state):
        self.__dict__.update(state, _pins_lock=threading.Lock())

    def fetch(self, rel: str, record: dict | None = None, pin: bool = False, wait: bool = True) -> Path | None:
        """The local copy of file `rel`, downloaded (and checked against `record`) unless present.

        The file's lock file (``.<name>.lock``) makes the DataLoader workers that need the same shard
        download it once between them: a download holds it exclusively; without `wait`, a file another
        process is downloading is left to it (None). With `pin` (shard data), this process then holds it
        shared until `release`, and eviction, which takes it exclusively without waiting, passes the file by:
        a shard fetched ahead is not deleted before it is read, by this process or another."""
        check_recorded(self.shown, rel, "a recorded file")   # never a path out of the mirror
        local = self.mirror / rel
        if not pin and self._present(local, record):
            return local
        if pin:  # flock is per open file: this process's own pin would block its download of a file deleted since
            self._unpin([rel])
        local.parent.mkdir(parents=True, exist_ok=True)
        while True:
            lock = open(local.with_name(f".{local.name}.lock"), "a")
            try:
                try:  # flock converts a lock by dropping it first: two processes cannot deadlock here
                    fcntl.flock(lock, fcntl.LOCK_SH if wait else fcntl.LOCK_SH | fcntl.LOCK_NB)
                    missing = not self._present(local, record)
                    if missing:
                        fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # another process is downloading (or evicting) it
                    return None
                if missing:
                    fetched = not self._present(local, record)  # else another fetched it meanwhile
                    if fetched:
                        self._download(rel, record)
                    fcntl.flock(lock, fcntl.LOCK_SH)
                    if not self._present(local, record):  # evicted between the two locks: again
                        continue
                    if pin and fetched:
                        self._trim(local)
                if pin:  # kept open until released; a second pin (a prefetch's and its reader's) closes the first
                    with self._pins_lock:
                        previous = self._pins.get(rel)
                        self._pins[rel] = lock
                    lock = previous
                return local
            finally:
                if lock is not None:
                    lock.close()

    def _download(self, rel: str, record: dict | None) -> None:
        data = self.read(rel, None if record is None else record["bytes"])
        problem = check_bytes(data, record)
        if problem and not (self.keep_damaged and len(data) == record["bytes"]):
            raise StoreError(f"{self.where(rel)}: {problem} (a damaged or replaced file); run "
                             f"`latentstore verify {self.shown}`")
        if problem:
            warnings.warn(f"{self.where(rel)}: {problem} (damaged); kept in the cache for this lenient reader "
                          f"(max_skips), which checks it sample by sample; run `latentstore verify {self.shown}`",
                          stacklevel=2)
        self._put(rel, data, damaged=bool(problem))

    def checked_on_arrival(self, shard: dict, arrays=None) -> bool:
        """Whether the shard's files in the mirror (`arrays`: as for `shard_files`) all arrived since this
        store was opened, by this process or another reading it with it (a DataLoader worker): each was then
        checked whole against its manifest record (size, CRC-32C) before it entered the mirror, so its readers
        need not check its samples one by one again. A file cached before, by an earlier job, is checked by
        its readers as a local store's files are, once per process: the cache is a local folder, and its
        files can change on disk as a store's can."""
        data = [f for f in shard_files(shard, arrays) if f is not shard.get("index")]  # every read checks an index
        try:
            return all((self.mirror / f["path"]).stat().st_mtime_ns >= self.opened_ns for f in data)
        except FileNotFoundError:  # evicted meanwhile: its reader says so
            return False

    def named(self, records, shard: dict):
        """A lenient reader's `records` (Samples, ReadErrors) of `shard`, read from the mirror, with each
        ReadError naming the shard by its URL (a strict reader's error: `held`)."""
        for record in records:
            if isinstance(record, ReadError):
                record = dataclasses.replace(record, message=self._url_in(record.message, shard))
            yield record

    def _url_in(self, text: str, shard: dict) -> str:
        return text.replace(f"shard {shard['path']}", f"shard {self.where(shard['path'])}", 1)

    def release(self, shard: dict) -> None:
        """Unpin the files of `shard` (read out: an open file outlives its eviction), and trim the cache
        if pinned files held it above its limit."""
        self._unpin(f["path"] for f in shard_files(shard))
        if self._over:
            self._trim()

    def _unpin(self, rels) -> None:
        with self._pins_lock:
            locks = [self._pins.pop(rel, None) for rel in rels]
        for lock in filter(None, locks):
            lock.close()

    def _present(self, local: Path, record: dict | None) -> bool:
        """A complete copy is there (it was checked on arrival; see `checked_on_arrival` for its readers),
        and one this reader may use: a file kept damaged only for a lenient one."""
        try:
            stat = local.stat()
        except FileNotFoundError:
            return False
        size = stat.st_size
        if record is not None and size != record.get("bytes", size):
            return False
        if stat.st_mtime_ns == 0 and not self.keep_damaged:
            return False
        # Recently used: evicted last. The access time says so, not the modification time: readers remember
        # a file's checks by its size and mtime (a changed file gets a new one), and a touched mtime made
        # them check a cached file again at every fetch.
        os.utime(local, ns=(time.time_ns(), stat.st_mtime_ns))
        return True

    def prefetch(self, shards: list, arrays=None) -> None:
        """Start fetching `shards` in the background, PREFETCH_THREADS at a time: the next window's shards
        arrive while the current one is read. The DataLoader workers read the same windows, so they ask for
        the same shards in the same order: a shard another worker is downloading is skipped, and each
        worker's threads go on to one nobody fetches yet (where it is needed, `fetch_shard` waits for it).
        `arrays`: as for `shard_files`."""
        self._start_threads()
        for shard in shards:
            if shard["path"] not in self._pending:
                self._pending[shard["path"]] = self._pool.submit(self._fetch_shard, shard, arrays, wait=False)

    def end_pass(self) -> None:
        """Drop the prefetches not started yet, wait for the running ones, and unpin every file: a pass is
        over (read out or abandoned), and its shards fetched ahead but not read stay in the cache unpinned.
        - A DataLoader worker exits once its pass is read, and a fetch still running while its interpreter
          shut down stalled until the client's timeout (a minute) in tests/test_remote.py, holding the
          shard's download lock against the next workers.
        - A persistent worker that kept its pins between passes held off other workers' downloads of those
          files for as long as it lived, should the files be deleted meanwhile."""
        if self._pool_pid == os.getpid():
            running = [pending for pending in self._pending.values() if not pending.cancel()]
            self._pending = {}
            for pending in running:
                pending.exception()  # waits; a prefetch's error matters only to a reader of its shard
        self._unpin(list(self._pins))
        if self._over:
            self._trim()

    @contextmanager
    def held(self, shard: dict, arrays=None):
        """The shard's files (`arrays`: as for `shard_files`) fetched and pinned for the body of the with-block,
        released after it. A reader's StoreError in the body names the shard by its URL, and the copy it read
        (damaged in the cache while the bucket's is sound, that copy is to be deleted)."""
        self.fetch_shard(shard, arrays)
        try:
            yield
        except StoreError as exc:
            raise StoreError(f"{self._url_in(str(exc), shard)} (read from its copy in the cache, "
                             f"{self.mirror / shard['path']}: should `latentstore verify {self.shown}` find the "
                             "store sound, delete that copy)") from exc
        finally:
            self.release(shard)

    def fetch_shard(self, shard: dict, arrays=None) -> None:
        """The files of one manifest shard (`shard_files`); waits for its prefetch where one runs (a
        prefetch's error is raised here, where the shard is needed)."""
        pending = self._pending.pop(shard["path"], None) if self._pool_pid == os.getpid() else None
        if pending is not None:
            pending.result()
        self._fetch_shard(shard, arrays)  # present already after a prefetch: a stat per file

    def _fetch_shard(self, shard: dict, arrays=None, wait: bool = True) -> None:
        """The shard's files, FILE_THREADS at a time: each is a round trip (a tar shard and its index; a Zarr
        unit's chunk files, one or more per array)."""
        self._start_threads()
        files = shard_files(shard, arrays)
        list(self._file_pool.map(lambda f: self.fetch(f["path"], f, pin=True, wait=wait), files))

    def _start_threads(self) -> None:
        """The thread pools of this process (a forked DataLoader worker does not have its parent's threads)."""
        if self._pool_pid != os.getpid():
            self._pool, self._file_pool = ThreadPoolExecutor(PREFETCH_THREADS), ThreadPoolExecutor(FILE_THREADS)
            self._pending, self._pool_pid = {}, os.getpid()

    def fetch_small(self, manifest: dict) -> None:
        """Everything but shard data: commit records, sample indexes, Zarr array descriptions, SMALL_FILE_THREADS
        at a time (a store has two small files per shard, each a round trip to the object store)."""
        from .format import commit_record_name  # format imports nothing of ours at this stage's cost
        wanted = {}  # path -> its manifest record, or None
        for split, info in manifest["splits"].items():
            for shard in info["shards"]:
                if shard.get("index"):
                    wanted[shard["index"]["path"]] = shard["index"]
                group = shard.get("group")
                if group is None:
                    group = int(Path(shard["path"]).name.split("-")[-1].split(".")[0])
                wanted[commit_record_name(split, group)] = None
        if manifest.get("backend") == "zarr":
            data = {f["path"] for i in manifest["splits"].values() for s in i["shards"] for f in s.get("files", [s])}
            wanted.update((rel, None) for rel in self.files() if rel not in data and rel != MANIFEST)
        with ThreadPoolExecutor(SMALL_FILE_THREADS) as pool:
            list(pool.map(lambda rel: self.fetch(rel, wanted[rel]), wanted))

    def download_all(self, folder: Path) -> Path:
        """Every file of the store, as it is, into `folder` (verify reads and judges every byte itself, so a
        damaged file is downloaded for it to report, never into the mirror readers use)."""
        for rel in self.files():
            local = folder / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(self.read(rel))
        return folder

    def _put(self, rel: str, data: bytes, damaged: bool = False) -> None:
        local = self.mirror / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}-{threading.get_ident()}.part")
        tmp.write_bytes(data)
        if damaged:  # mtime 0: older than any reader's opening, so checked by each, and fetched again if strict
            os.utime(tmp, ns=(time.time_ns(), 0))
        os.replace(tmp, local)  # workers filling the same file: the last complete copy wins

    def _trim(self, fetched: Path | None = None) -> None:
        """Count file `fetched` into the cache's recorded size (USAGE, shared under a lock by every process
        using the cache); once that passes the limit, list the cache and evict. So the cache is listed once
        per (1 - LOW_WATER) x limit of fetches, not after every fetch: O(files) each time. Pinned files stay,
        so the cache can hold more than its limit while they are read."""
        self.cache.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.cache / USAGE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when the file closes
            try:
                used = int(json.loads(os.pread(fd, 4096, 0))["bytes"]) + (fetched.stat().st_size if fetched else 0)
            except (ValueError, KeyError, TypeError):  # a new cache (or a damaged record): list it
                used = None
            if used is None or used > self.limit:
                used = self._evict(int(self.limit * LOW_WATER))
            self._over = used > self.limit  # pinned files held it above: trim again when they are released
            # Written over in place, padded to one length: truncating and rewriting a file makes ext4 flush
            # it on close (auto_da_alloc), a disk wait per fetch.
            os.pwrite(fd, json.dumps({"bytes": used}).ljust(64).encode(), 0)
        finally:
            os.close(fd)

    def _evict(self, target: int) -> int:
        """Delete least recently used files of the cache until it holds at most `target` bytes; returns what
        it holds then. Other workers fill the same cache meanwhile: a file gone since the listing is skipped."""
        files = []
        for folder, _, names in os.walk(self.cache):
            for name in names:
                path = os.path.join(folder, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                files.append((st.st_atime, st.st_size, Path(path)))
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(files, key=lambda f: f[0]):
            if total <= target:
                break
            # the small files stay (readers open them any time), and so do the ones being filled
            if p.suffix in (".json", ".lock", ".part") or not _unlink_unless_locked(p):
                continue
            total -= size
        return total


def _unlink_unless_locked(path: Path) -> bool:
    """Delete `path` unless a process holds its lock file (downloading or pinning it); True if deleted."""
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        path.unlink(missing_ok=True)
        return True


_OPEN: dict = {}


def local_root(store, storage_options: dict | None = None, cache_dir=None,
               keep_damaged: bool = False) -> tuple[Path, Remote | None]:
    """(a local folder that holds the store's manifest and small files, the Remote or None);
    `keep_damaged`: as for Remote."""
    if not is_url(store):
        return Path(str(store).removeprefix("file://")), None
    key = (shown(store), json.dumps(storage_options or {}, sort_keys=True, default=str), str(cache_dir), keep_damaged)
    if key not in _OPEN:
        remote = Remote(store, storage_options, cache_dir, keep_damaged)
        remote.fetch_small(json.loads((remote.mirror / MANIFEST).read_bytes()))
        _OPEN[key] = remote
    return _OPEN[key].mirror, _OPEN[key]
