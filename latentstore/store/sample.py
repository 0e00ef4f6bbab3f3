"""The sample the stages hand on: encoder -> writers, readers -> convert, add-teacher, verify.

A Sample holds decoded values, never member bytes. Each backend serialises it
its own way (writers/webdataset.py as tar members, writers/zarr.py as array
rows), and `readers.read_shard` gives one back, so no stage turns arrays into
bytes only for the next one to parse them again. Field names and encodings: format.FIELDS
and docs/FORMAT.md, "Samples".
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

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

    @classmethod
    def from_read(cls, read: dict, variant: int) -> "Sample":
        """From a reader's dict ({field: decoded value, "__key__", "__shard__"}, meta as its JSON dict)."""
        key, shard = read["__key__"], read.get("__shard__")
        fields = {name: v for name, v in read.items() if name != "meta" and not name.startswith("__")}
        meta = SampleMeta.from_dict(read["meta"], f"shard {shard}, key {key}") if "meta" in read else None
        return cls(key, variant, fields, meta, shard)


@dataclass(frozen=True)
class ReadError:
    """What a lenient reader yields in place of a sample it cannot trust: `message` is the one-line
    error naming `shard` and `key`; `key` None is damage to the shard itself, after which the
    reader yields nothing more."""
    shard: str
    key: str | None
    message: str
