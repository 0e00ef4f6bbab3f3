"""WebDataset tar shards, committed atomically per item group.

A build splits the source into groups of ``shard_size`` images. Group j yields
one shard per variant (``train/v000-00000j.tar`` ... ``v015-...``), written to
temporary names and renamed only when the whole group succeeded; a commit
record (``train/group-00000j.json``) with each shard's digests and sample count
is renamed last. A shard without a matching record is not part of the store.
Tar headers are fixed (mtime 0, fixed owner, sorted members), so the bytes
depend on the samples only.

Beside each shard goes its sample index (``train/v000-00000j.idx.json``: each
sample's key, byte span and CRC-32C, readers/webdataset.py), listed in the
record with its own digests: a reader that wants some samples of a shard
reads and checks those alone, where without it every reader of the shard had
to check the whole file.
"""
from __future__ import annotations

import os
from pathlib import Path

import webdataset as wds

from ..checksum import Digests, file_record
from ..format import commit_record_name, encode_field, fsync_dir, get_field, shard_name, write_json_atomic
from ..locks import is_stale_temp, temp_name
from ..sample import Sample
from .reader import build_index, index_name


class _HashingFile:
    """A write-only file wrapper that digests and counts what passes through."""

    def __init__(self, path: Path):
        self._f = open(path, "wb")
        self.digests = Digests()

    def write(self, data) -> int:
        if self._f is None:  # discarded: tarfile may still flush from its finalizer
            return len(data)
        self.digests.update(data)
        return self._f.write(data)

    def flush(self):
        self._f.flush()

    def close_synced(self):
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None  # tarfile's finalizer may still write its end blocks: dropped, not an error

    def close(self):  # tarfile may call close() on its fileobj; we close explicitly
        pass

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
            self._tars.append(wds.TarWriter(f, encoder=False, mtime=0, user="latentstore",
                                            group="latentstore", mode=0o644))

    def write(self, sample: Sample) -> dict:
        members = {get_field(name).ext: encode_field(name, value) for name, value in sample.values().items()}
        self._tars[sample.variant].write({"__key__": sample.key, **members})
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
            tar.tarstream.close()  # writes the end-of-archive blocks through our wrapper
            f.close_synced()
            name = shard_name(self.split, v, self.group)
            os.replace(tmp, final)
            self._renamed = v + 1
            write_json_atomic(index, build_index(final, name))
            shards.append({"path": name, "variant": v, "samples": self._counts[v], **f.digests.record(),
                           "index": {"path": index_name(name), **file_record(index)}})
        fsync_dir(self.store / self.split)
        record = {"group": self.group, "shards": shards, **record}
        write_json_atomic(self.store / commit_record_name(self.split, self.group), record)
        return record
