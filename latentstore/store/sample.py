"""The sample the stages hand on: encoder -> writers, readers -> dataset, convert, add-teacher, verify.

A Sample holds decoded values, never member bytes. Each backend serialises it
its own way (store/tar/writer.py as tar members, store/zarr/writer.py as array
rows), and its reader gives one back (a ReadError where a lenient read cannot
trust it; store/readers.py), so no stage turns arrays into
bytes only for the next one to parse them again. Field names and encodings: format.FIELDS
and docs/FORMAT.md, "Samples".
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..errors import StoreError


@dataclass(frozen=True)
class SampleMeta:
    """A sample's meta.json: where it came from, how it was cut and padded, what it cost."""
    key: str
    item: str                  # the source item's key; a sample key is "<item>_v<variant>"
    label: int                 # class index, -1 when unlabeled
    variant: int
    source: str                # path of the source image under the dataset root
    augment: dict              # augment.sample_params: enough to cut the crop again
    image_size: list           # [h, w] of the crop before padding
    padding: dict              # format.Padding.as_dict()
    valid_region: list         # latent rows/cols of the unpadded crop
    y_shape: list
    z_shape: list | None
    bits: int                  # of all strings: bpp = bits / (h * w)
    bpp: float
    extra: dict = field(default_factory=dict)  # keys of another latentstore version, kept as they are

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "SampleMeta":
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
        missing = [n for n in names if n not in d]
        if missing:
            raise StoreError(f"{where}: meta.json lacks {', '.join(missing)}")
        return cls(**{n: d[n] for n in names}, extra={k: v for k, v in d.items() if k not in names})


@dataclass
class Sample:
    """One stored sample: its key, variant and fields by name (format.FIELDS: arrays, bitstrings,
    the int label), with meta.json as a SampleMeta (None when a reader was not asked for it).
    `shard` names where a reader found it, for error messages; writers ignore it."""
    key: str
    variant: int | None        # None where the reader was not told (a tar shard read without its record)
    fields: dict
    meta: SampleMeta | None = None
    shard: str | None = None

    def values(self) -> dict:
        """{field name: value}, meta as its JSON dict: what a backend serialises."""
        return {**self.fields, **({"meta": self.meta.to_dict()} if self.meta is not None else {})}

    def as_item(self) -> dict:
        """webdataset's dict shape, {"__key__", "__shard__", field: value, "meta": dict}: what a dataset
        hands out (read/stages.py makes tensors of it)."""
        return {"__key__": self.key, "__shard__": self.shard, **self.values()}


@dataclass(frozen=True)
class ReadError:
    """What a lenient reader yields in place of a sample it cannot trust: `message` is the one-line
    error naming `shard` and `key`; `key` None is damage to the shard itself, after which the
    reader yields nothing more."""
    shard: str
    key: str | None
    message: str


def in_order(records: Iterable, order: list[int]) -> Iterator:
    """One record per index of `order`, in that order, from a reader's `records` in stored order
    (None where not wanted), all read first. Damage to the shard itself comes alone, wherever it showed:
    the samples read before it are not trusted either. A wanted index the reader never gave ends the
    stream early (its caller counts that as damage)."""
    by_index = {}
    for i, record in enumerate(records):
        if isinstance(record, ReadError) and record.key is None:
            yield record
            return
        if record is not None:
            by_index[i] = record
    for i in order:
        if i not in by_index:
            return
        yield by_index[i]
