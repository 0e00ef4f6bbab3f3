"""WebDataset tar shards, committed atomically per item group.

A build splits the source into groups of ``shard_size`` images. Group j yields
one shard per variant (``train/v000-00000j.tar`` ... ``v015-...``), written to
temporary names and renamed only when the whole group succeeded; a commit
record (``train/group-00000j.json``) with each shard's digests and sample count
is renamed last. A shard without a matching record is not part of the store.
Tar headers are fixed (mtime 0, fixed owner, sorted members), so the bytes
depend on the samples only.

Beside each shard goes its sample index (``train/v000-00000j.idx.json``: each
sample's key, byte span and CRC-32C; store/tar/index.py), listed in the record
with its own digests, so a reader that wants some samples of a shard reads and
checks those alone. The writer takes each span's offsets and CRC-32C from the
bytes it streams, so the shard is never read back.

Members are written with the stdlib ``tarfile`` in PAX format, the calls
webdataset's ``TarWriter`` makes (members sorted by suffix), so a shard is a
WebDataset shard and webdataset is not needed to write one.
"""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import google_crc32c

from ..checksum import Digests, file_record
from ..format import commit_record_name, encode_field, fsync_dir, get_field, shard_name, write_json_atomic
from ..locks import is_stale_temp, temp_name
from ..sample import Sample
from .index import IndexBuilder, index_name

#: Tar member attributes: fixed, so a shard's bytes depend on its samples only.
_OWNER, _MODE, _MTIME = "latentstore", 0o644, 0
_MEMBER_WRITE = 16 << 20


class _HashingFile:
    """A write-only file that digests and counts what passes through, and takes the CRC-32C of each span
    between two ``start_span`` calls (a sample's bytes, for the sample index)."""

    def __init__(self, path: Path):
        self._f = open(path, "wb")
        self.digests = Digests()
        self.span_crc32c = 0

    def write(self, data) -> int:
        self.digests.update(data)
        self.span_crc32c = google_crc32c.extend(self.span_crc32c, data)
        return self._f.write(data)

    def tell(self) -> int:
        return self.digests.nbytes

    def start_span(self) -> int:
        """Begin a new span at the current offset, which it returns."""
        self.span_crc32c = 0
        return self.tell()

    def close_synced(self):
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None

    def discard(self):
        if self._f is not None:
            self._f.close()
        self._f = None


class ShardGroupWriter:
    """The shards of one item group, one per variant: written under temporary names, renamed by
    ``commit`` (all of them, then the record), or removed by ``discard``. Driven by commit.GroupCommit."""

    def __init__(self, store: Path, layout):
        self.store, self.layout = store, layout
        self.split, self.group = layout.split, layout.group
        self._finals = [store / shard_name(self.split, v, self.group) for v in range(layout.variants)]
        self._indexes = [store / index_name(shard_name(self.split, v, self.group)) for v in range(layout.variants)]
        self._temps = [temp_name(p) for p in self._finals]
        self._files, self._tars, self._counts = [], [], [0] * layout.variants
        self._built = [IndexBuilder() for _ in range(layout.variants)]
        self._renamed = 0  # shards of this group already renamed into place by commit()

    def open(self) -> None:
        (self.store / self.split).mkdir(parents=True, exist_ok=True)
        # A killed earlier attempt at this group may have left temporaries: those of dead processes are
        # stale; a live process's (a concurrent convert or add-teacher) are its own to commit or remove.
        record = self.store / commit_record_name(self.split, self.group)
        for final in self._finals + self._indexes + [record]:
            for stale in final.parent.glob(f".{final.name}.tmp-*"):
                if is_stale_temp(stale):
                    stale.unlink(missing_ok=True)
        for tmp in self._temps:
            f = _HashingFile(tmp)
            self._files.append(f)
            # copybufsize: a member's bytes in one write through the digests, not tarfile's 16 kB pieces
            self._tars.append(tarfile.TarFile(fileobj=f, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                                              copybufsize=_MEMBER_WRITE))

    def write(self, sample: Sample) -> dict:
        members = {get_field(name).ext: encode_field(name, value) for name, value in sample.values().items()}
        tar, f = self._tars[sample.variant], self._files[sample.variant]
        start = f.start_span()
        for ext in sorted(members):
            info = tarfile.TarInfo(f"{sample.key}.{ext}")
            info.size, info.mtime, info.mode = len(members[ext]), _MTIME, _MODE
            info.uname = info.gname = _OWNER
            tar.addfile(info, io.BytesIO(members[ext]))
        self._built[sample.variant].add(sample.key, start, f.tell() - start, f.span_crc32c)
        self._counts[sample.variant] += 1
        return {ext: len(data) for ext, data in members.items()}

    def finish_variant(self, variant: int) -> None:
        """No more samples of `variant` will come (a hint the Zarr writer uses; shards need none)."""

    def discard(self) -> None:
        """Remove this group's temporary files (and, after a failed commit, the shards it renamed and
        their indexes: without their record they are no part of the store, and the rerun rewrites them)."""
        for f in self._files:
            f.discard()
        for tmp in self._temps:
            tmp.unlink(missing_ok=True)
        for final in self._finals[:self._renamed] + self._indexes[:self._renamed]:
            final.unlink(missing_ok=True)

    def commit(self, record: dict) -> dict:
        """Put every shard and its index into place, then write `record` (with their entries) last."""
        shards = []
        for v, (tar, f, tmp, final, index) in enumerate(zip(self._tars, self._files, self._temps, self._finals,
                                                            self._indexes)):
            tar.close()  # writes the end-of-archive blocks through our wrapper
            f.close_synced()
            name = shard_name(self.split, v, self.group)
            os.replace(tmp, final)
            self._renamed = v + 1
            write_json_atomic(index, self._built[v].columns)
            shards.append({"path": name, "variant": v, "samples": self._counts[v], **f.digests.record(),
                           "index": {"path": index_name(name), **file_record(index)}})
        fsync_dir(self.store / self.split)
        record = {"group": self.group, "shards": shards, **record}
        write_json_atomic(self.store / commit_record_name(self.split, self.group), record)
        return record
