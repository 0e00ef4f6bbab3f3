"""One item group on its way into a store: samples in, statistics kept, committed with its record.

Every stage that writes (build, convert, add-teacher) writes whole item groups
through a GroupCommit:

    with GroupCommit(store, backend, layout) as group:
        for sample in samples:
            group.write(sample)
        record = group.commit(rejects=..., sources=...)

The backend writer (tar/writer.py, zarr/writer.py) makes the group's files under temporary names;
``commit`` renames them into place, writes the group's record last and returns
it (docs/reliability.md §1). Leaving the block without a commit, by an
exception or otherwise, removes everything the group wrote (§2).

convert and add-teacher write a committed group again, sample by sample, with
``rewrite_group``; what differs between them is the edit each sample gets.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .checksum import file_problem
from .format import commit_record_name, recorded_files
from .readers import read_shard
from .sample import Sample
from .writers import WRITERS


@dataclass(frozen=True)
class GroupLayout:
    """Where group `group` of a split sits: its items (rejects included) in source order, and the
    split's geometry (the Zarr backend sizes its arrays by it)."""
    split: str
    group: int
    variants: int
    item_keys: tuple
    shard_size: int
    total_items: int

    @property
    def first_item(self) -> int:
        return self.group * self.shard_size


class GroupCommit:
    """Write one group's samples through its backend's writer, count them, commit, return the record."""

    def __init__(self, store, backend: str, layout: GroupLayout):
        self.layout = layout
        self._writer = WRITERS[backend](Path(store), layout)
        self._stats = {"samples": 0, "bits": 0, "pixels": 0, "field_bytes": {}}
        self._committed = False

    def __enter__(self) -> "GroupCommit":
        try:
            self._writer.open()
        except BaseException:  # a Ctrl-C inside open(): __exit__ does not run, and open() made temporaries
            self._writer.discard()
            raise
        return self

    def write(self, sample: Sample) -> None:
        written = self._writer.write(sample)   # {member suffix: bytes}, as tar members for every backend
        h, w = sample.meta.image_size
        self._stats["samples"] += 1
        self._stats["bits"] += sample.meta.bits
        self._stats["pixels"] += h * w
        self._stats.setdefault("image_size", [h, w])  # seg-val: the split's size comes from its images
        sizes = self._stats["field_bytes"]
        for ext, n in written.items():
            sizes[ext] = sizes.get(ext, 0) + n

    def finish_variant(self, variant: int) -> None:
        """No more samples of `variant` will come (lets the Zarr writer flush that variant's chunks)."""
        self._writer.finish_variant(variant)

    def commit(self, rejects: list = (), sources: list | None = None) -> dict:
        """Rename the group's files into place, write its record last; return the record."""
        record = {"images": len(self.layout.item_keys), "items": list(self.layout.item_keys),
                  "rejects": list(rejects), "stats": self._stats, "sources": sources}
        record = self._writer.commit(record)
        self._committed = True
        return record

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self._committed:
            self._writer.discard()
        return False


def rewrite_group(src, src_backend: str, record: dict, dst, backend: str, layout: GroupLayout,
                  edit: Callable[[Sample], Sample] | None = None) -> dict:
    """Write committed group `record` of store `src` again, as group `layout` of store `dst` in
    `backend`, each Sample as `edit` returns it (None: as read); return the new record. `dst` may be
    `src`: the new files replace the old ones at commit.

    The shards are read without their digests: the caller has just checked them, so each byte is
    digested once."""
    with GroupCommit(dst, backend, layout) as group:
        for shard in record["shards"]:
            for sample in read_shard(src, src_backend, shard, check_digest=False):  # the caller checked them
                group.write(sample if edit is None else edit(sample))
            group.finish_variant(shard["variant"])
        return group.commit(record["rejects"], record.get("sources"))


def read_record(store: Path, split: str, group: int) -> dict | None:
    """A group's commit record if the group is fully committed: every file it lists is there at its size
    (a file lost or replaced since puts the group back on a build's to-do list)."""
    path = Path(store) / commit_record_name(split, group)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if any(file_problem(Path(store) / f["path"], f) for f in recorded_files(record)):
        return None
    return record
