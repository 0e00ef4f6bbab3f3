"""What one split of a store holds: its fields, its sample keys, and where each sample lives.

The fields come from the member sizes the manifest records per split
(``bytes_per_sample``), so a request for a field the split never stored is
refused up front instead of giving samples without it.

The keys come from the split's group commit records (``<split>/group-<j>.json``),
which list every item of the group and the items rejected at build time; a
shard (tar) or unit (Zarr) of variant v holds the group's stored items in
that order, each under the key ``<item>_v<v:03d>``. The count is checked
against the manifest, so a record that disagrees with its shard is an error,
never a wrong answer.

Costs: a Zarr sample is one slice of its chunks; a tar sample is one read of
its span in the shard's sample index.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError, StoreError
from .format import FIELDS, OPTIONAL_FIELDS, commit_record_name, field_for_member, sample_key
from .paths import store_file
from .readers import iter_shard
from .sample import Sample


def stored_fields(info: dict) -> tuple | None:
    """The fields every sample of a split holds (manifest ``splits[split]``), from the member sizes
    recorded when the split was sealed; None for a split without samples (nothing to check)."""
    names = []
    for ext in info.get("bytes_per_sample") or {}:
        field = field_for_member(ext)
        if field is not None and not field.name.endswith(".scale") and field.name not in names:
            names.append(field.name)
    order = list(FIELDS)  # the table's order (y_hat first), then teacher maps by name
    return tuple(sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))) if names else None


def check_fields(fields, info: dict, store, split: str) -> tuple:
    """`fields` as a tuple of names (a string is one name), refused unless the split stores each one."""
    fields = (fields,) if isinstance(fields, str) else tuple(fields)
    held = stored_fields(info)
    missing = [f for f in fields if held is not None and f not in held]
    if missing:
        hint = ""
        if set(missing) & set(OPTIONAL_FIELDS):
            hint = f"; build with --fields {','.join(f for f in missing if f in OPTIONAL_FIELDS)} to store them"
        elif "label_map" in missing:
            hint = "; label_map is stored by Cityscapes (segmentation) builds only"
        elif any(f.startswith("teacher_") for f in missing):
            hint = "; teacher maps come from a build with --teacher or `latentstore add-teacher`"
        raise ConfigError(f"Split {split!r} of {store} has no field {', '.join(missing)}: it holds "
                          f"{', '.join(held)}{hint}")
    return fields


class SplitKeys:
    """Every sample key of one split, by shard, in stored order."""

    def __init__(self, store, manifest: dict, split: str):
        self.store, self.split = Path(store), split
        self.info = manifest["splits"][split]
        self.by_shard: dict[str, list[str]] = {}
        records: dict[int, dict] = {}
        for shard in self.info["shards"]:
            group = _group_of(shard)
            if group not in records:
                path = self.store / commit_record_name(split, group)
                try:
                    records[group] = json.loads(path.read_text())
                except (OSError, ValueError) as exc:
                    raise StoreError(f"shard {shard['path']}: its commit record {path.name} is unreadable "
                                     f"({exc}); run `latentstore verify`") from exc
            record = records[group]
            rejected = {r["key"] for r in record.get("rejects", ())}
            keys = [sample_key(item, shard["variant"]) for item in record["items"] if item not in rejected]
            if len(keys) != shard["samples"]:
                raise StoreError(f"shard {shard['path']}: its commit record lists {len(keys)} samples, the "
                                 f"manifest records {shard['samples']}; run `latentstore verify`")
            self.by_shard[shard["path"]] = keys
        self.where = {key: (path, i) for path, keys in self.by_shard.items() for i, key in enumerate(keys)}
        self._variant_keys: dict[int, list[str]] = {}

    def keys(self, variant: int | None = None) -> list[str]:
        """The keys of `variant` (None: every variant, variant by variant), in stored (unshuffled) order."""
        if variant is None:
            return [key for v in range(self.info["variants"]) for key in self._of_variant(v)]
        return list(self._of_variant(variant))

    def key_at(self, variant: int, index: int) -> str:
        """The key at position `index` (negative counts from the end) of ``keys(variant)``."""
        keys = self._of_variant(variant)
        if not -len(keys) <= index < len(keys):
            raise ConfigError(f"Sample index {index} out of range: variant {variant} of split {self.split!r} "
                              f"holds {len(keys)} samples")
        return keys[index]

    def _of_variant(self, variant: int) -> list[str]:
        if variant not in self._variant_keys:  # kept, so that ds[i] does not rebuild the list
            self._variant_keys[variant] = [key for shard in self.info["shards"] if shard["variant"] == variant
                                           for key in self.by_shard[shard["path"]]]
        return self._variant_keys[variant]

    def locate(self, key: str) -> tuple[dict, int]:
        """(shard record, position in the shard) of the sample `key`."""
        if not isinstance(key, str) or key not in self.where:
            raise ConfigError(f"No sample {key!r} in split {self.split!r} of {self.store} (keys are "
                              "<item key>_v<variant:03d>; ds.keys() or `latentstore info --keys` lists them)")
        path, index = self.where[key]
        return next(s for s in self.info["shards"] if s["path"] == path), index


def _group_of(shard: dict) -> int:
    """A shard's group: recorded on Zarr units, the number in a tar shard's name (``v000-000012.tar``)."""
    if "group" in shard:
        return int(shard["group"])
    return int(Path(shard["path"]).name.split("-")[-1].split(".")[0])


def read_tar_sample(store, shard: dict, index: int, key: str, fields: tuple) -> Sample:
    """Sample number `index` of a tar shard, checked to be `key` (through the shard's sample index)."""
    path = store_file(store, shard["path"], f"shard {shard['path']}")
    for i, sample in enumerate(iter_shard(path, shard["path"], None, fields,
                                          wanted={index}, record=shard, variant=shard["variant"])):
        if i == index:
            if sample.key != key:
                raise StoreError(f"shard {shard['path']}: sample #{index} is {sample.key!r}, its commit "
                                 f"record says {key!r}; run `latentstore verify`")
            return sample
    raise StoreError(f"shard {shard['path']}: holds fewer than {index + 1} samples, the manifest records "
                     f"{shard['samples']}; run `latentstore verify` and rebuild it")
