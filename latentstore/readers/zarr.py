"""Strict reading of latentstore Zarr stores: the same sample dicts as the tar reader.

Zarr itself reads a missing chunk as fill_value without a word, and blosc has
no checksum (a flipped byte decodes to other numbers), so nothing is read
before the unit's files of the arrays being read (listed with size and digests
in the manifest) are checked: size always, the digest once per process and file
(latentstore/checksum.py; memoized by path, size and mtime, so later epochs do
not check again), unless the caller has just checked it itself (verify,
convert and add-teacher pass ``check_digest=False``).
``verify`` also looks for chunks no commit record claims and for leftover
temporary files. Every error is a StoreError naming the unit (and key). Samples come out exactly as ``iter_shard`` gives
them from a tar shard of the same build: same keys, dtypes and values
(symbols are narrowed to the smallest integer dtype, as the shards store them).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Container, Iterator

import numpy as np
import zarr

from ..checksum import check_once, file_problem
from ..errors import ConfigError, StoreError
from ..format import (ZARR_STORED_DTYPE, ZARR_TEMP_PREFIX, ZARR_VLEN_FIELDS, commit_record_name, read_manifest,
                      smallest_int_dtype)


def _split_group(store: Path, split: str) -> zarr.Group:
    try:
        return zarr.open_group(str(store), mode="r")[split]
    except (KeyError, ValueError, FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise StoreError(f"{store}: no Zarr group {split!r} ({exc}); the store is damaged") from exc


def _array_of(path: str) -> str:
    """The array a chunk file belongs to: "train/y_hat/c/0/1" -> "y_hat"; "train/meta/bytes/c/..." -> "meta"."""
    return path.split("/c/", 1)[0].split("/")[1]


def check_files(store: Path, unit: dict, arrays=None) -> None:
    """Every chunk file of the unit exists with its recorded size (else Zarr would return zeros); with
    `arrays` (names), those arrays' files also match their recorded digest."""
    for f in unit["files"]:
        path = store / f["path"]
        problem = file_problem(path, f)
        if problem:  # Zarr would read a missing chunk as zeros
            raise StoreError(f"shard {unit['path']}: chunk file {f['path']} {problem}. Run `latentstore verify` "
                             "and rebuild the group (rerun the build command).")
        if arrays is not None and _array_of(f["path"]) in arrays and not check_once(path, f):
            raise StoreError(f"shard {unit['path']}: chunk file {f['path']} differs from its record "
                             "(checksum): its samples cannot be trusted. Run `latentstore verify` and "
                             "rebuild the group (rerun the build command)")


def _convert(name: str, value):
    """A stored value as the tar reader decodes it."""
    if name == "label":
        return int(value)
    if name in ("symbols", "z_symbols"):
        return value.astype(smallest_int_dtype(value))
    if name == "meta":
        return json.loads(value)
    if name in ZARR_VLEN_FIELDS:
        return value
    return np.ascontiguousarray(value)


def _block(group, names, variant: int, lo: int, hi: int, row: int) -> dict:
    """{field: per-item values} for items lo..hi of one variant; vlen fields as lists of bytes."""
    out = {}
    for name in names:
        if name in ZARR_VLEN_FIELDS:
            offsets = group[f"{name}/offsets"][variant, lo:hi]
            end = int(offsets[:, 1].max()) if len(offsets) else 0
            data = group[f"{name}/bytes"][variant, row, :end].tobytes() if end else b""
            out[name] = [data[s:e] for s, e in offsets.tolist()]
        else:
            out[name] = group[name][variant, lo:hi]
    return out


def iter_unit(store, unit: dict, fields: tuple | None = None, lenient: bool = False,
              wanted: Container[int] | None = None, check_digest: bool = True) -> Iterator[dict | None]:
    """Yield the samples of one (variant, group) unit, as ``iter_shard`` does for a tar shard
    (None in place of samples whose index is not in `wanted`).

    Raises StoreError naming the unit (and key) when a chunk file is missing or
    resized, differs from its digest (only with `check_digest`: off for a caller
    that has just checked the digests itself), or the unit's sample count is not
    the recorded one. With ``lenient=True`` such damage comes as one
    {"__key__": None, "__error__"} dict.
    """
    store, name = Path(store), unit["path"]
    try:
        names = [n for n in unit["fields"] if fields is None or n in fields or n == "meta"]
        check_files(store, unit, {*names, "present"} if check_digest else None)  # sizes always
        group = _split_group(store, unit["split"])
        lo, hi = unit["items"]
        present = group["present"][unit["variant"], lo:hi]
        if int(present.sum()) != unit["samples"]:
            raise StoreError(f"shard {name}: holds {int(present.sum())} samples, the manifest records "
                             f"{unit['samples']}; run `latentstore verify` and rebuild the group")
        block = _block(group, names, unit["variant"], lo, hi, unit["group"])
    except Exception as exc:  # zarr, blosc and json raise many types: all become one naming the unit
        error = exc if isinstance(exc, StoreError) else \
            StoreError(f"shard {name}: unreadable Zarr data ({type(exc).__name__}: {exc}); run `latentstore verify`")
        if not lenient:
            raise error from exc
        yield {"__key__": None, "__shard__": name, "__error__": str(error)}
        return
    for index, i in enumerate(np.flatnonzero(present).tolist()):
        if wanted is not None and index not in wanted:
            yield None
            continue
        key = f"#{index}"
        try:
            meta = json.loads(block["meta"][i])
            key = meta["key"]
            sample = {"__key__": key, "__shard__": name}
            for field in names:
                if fields is None or field in fields:
                    sample[field] = meta if field == "meta" else _convert(field, block[field][i])
        except Exception as exc:
            error = StoreError(f"shard {name}, key {key}: does not decode ({type(exc).__name__}: {exc})")
            if not lenient:
                raise error from exc
            yield {"__key__": key, "__shard__": name, "__error__": str(error)}
            continue
        yield sample


class KeyIndex:
    """Random access by sample key ``<item>_v<variant>`` through the split's commit records."""

    def __init__(self, store, manifest: dict, split: str):
        self.store, self.split = Path(store), split
        info = manifest["splits"][split]
        self.units = {(u["variant"], u["group"]): u for u in info["shards"]}
        self.items: dict = {}
        for group in sorted({u["group"] for u in info["shards"]}):
            record = json.loads((self.store / commit_record_name(split, group)).read_text())
            first = next(u for u in record["shards"])["items"][0]
            self.items.update({key: (group, first + i) for i, key in enumerate(record["items"])})

    def get(self, key: str, fields: tuple | None = None) -> dict:
        item, sep, variant = key.rpartition("_v")
        if not sep or not variant.isdigit() or item not in self.items:
            raise ConfigError(f"No sample {key!r} in split {self.split!r} of {self.store} "
                              "(keys are <item key>_v<variant:03d>)")
        group, slot = self.items[item]
        unit = self.units.get((int(variant), group))
        if unit is None:
            raise ConfigError(f"No sample {key!r}: variant {int(variant)} is not stored")
        names = [n for n in unit["fields"] if fields is None or n in fields]
        check_files(self.store, unit, {*names, "present"})
        zgroup = _split_group(self.store, self.split)
        if not zgroup["present"][unit["variant"], slot]:
            raise ConfigError(f"No sample {key!r}: its image was rejected at build time (see the manifest)")
        try:
            block = _block(zgroup, names, unit["variant"], slot, slot + 1, group)
        except Exception as exc:
            raise StoreError(f"shard {unit['path']}, key {key}: unreadable Zarr data ({type(exc).__name__}: "
                             f"{exc}); run `latentstore verify`") from exc
        sample = {"__key__": key, "__shard__": unit["path"]}
        sample.update({n: _convert(n, block[n][0]) for n in names})
        return sample


#: codecs a latentstore Zarr array may use (writers/zarr.py COMPRESSORS, sharding and its index checksum)
KNOWN_CODECS = frozenset({"bytes", "blosc", "zstd", "sharding_indexed", "crc32c"})


def _codec_names(codecs: list) -> set:
    names = set()
    for c in codecs:
        names.add(c.get("name"))
        conf = c.get("configuration") or {}
        names |= _codec_names(conf.get("codecs", []) + conf.get("index_codecs", []))
    return names


def metadata_problems(store: Path, split: str, info: dict) -> list[str]:
    """Problems of the zarr.json of every array the split's units use: missing, unreadable, or not what
    the writer makes (fill value 0, the split's variant and image counts, known codecs, dtypes)."""
    problems, arrays = [], {"present"}
    for unit in info["shards"]:
        for name in unit["fields"]:
            arrays |= {f"{name}/bytes", f"{name}/offsets"} if name in ZARR_VLEN_FIELDS else {name}
    dtypes = {"present": "bool", "y_hat": info["config"].get("y_hat_dtype"),
              **{n: np.dtype(d).name for n, d in ZARR_STORED_DTYPE.items()}}
    for name in sorted(arrays):
        path = store / split / name / "zarr.json"
        rel = path.relative_to(store).as_posix()
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            problems.append(f"{rel}: missing; the array {split}/{name} cannot be read (restore it or rebuild the split)")
            continue
        except (OSError, ValueError) as exc:
            problems.append(f"{rel}: damaged ({exc})")
            continue
        field, _, part = name.partition("/")
        want = {"bytes": "uint8", "offsets": "int64"}.get(part) or dtypes.get(field)
        shape = meta.get("shape") or [None, None]
        if meta.get("node_type") != "array" or meta.get("zarr_format") != 3:
            problems.append(f"{rel}: not a Zarr v3 array description")
        if meta.get("fill_value") not in (0, False):
            problems.append(f"{rel}: fill_value {meta.get('fill_value')!r}, the store writes 0 (an edited fill value "
                            "changes what empty regions read as)")
        if want and meta.get("data_type") != want:
            problems.append(f"{rel}: data_type {meta.get('data_type')!r}, expected {want!r}")
        if shape[0] != info["variants"] or (part != "bytes" and shape[1] != info["images_found"]):
            problems.append(f"{rel}: shape {shape} does not match the manifest ({info['variants']} variants, "
                            f"{info['images_found']} images)")
        unknown = _codec_names(meta.get("codecs", [])) - KNOWN_CODECS
        if unknown or not meta.get("codecs"):
            problems.append(f"{rel}: codecs {sorted(unknown) or '(none)'} are not the ones latentstore writes")
    return problems


def verify(store) -> list[str]:
    """Problems of a Zarr store's committed data: missing, resized or altered chunks (digests),
    chunks no commit record claims, leftover temporary files, wrong sample counts. Empty if sound."""
    store = Path(store)
    manifest = read_manifest(store)
    if manifest["backend"] != "zarr":
        raise ConfigError(f"{store} is a {manifest['backend']} store, not zarr")
    problems = []
    for split, info in sorted(manifest["splits"].items()):
        meta_problems = metadata_problems(store, split, info)
        problems += meta_problems
        known = set()
        for unit in info["shards"]:
            for f in unit["files"]:
                known.add(f["path"])
                problem = file_problem(store / f["path"], f, digests=True)
                if problem:
                    problems.append(f"shard {unit['path']}: chunk file {f['path']} {problem}")
        for path in sorted((store / split).rglob("*")):
            rel = path.relative_to(store).as_posix()
            if any(part.startswith(ZARR_TEMP_PREFIX) or part.endswith(".partial") or ".tmp-" in part
                   for part in path.relative_to(store).parts):
                if path.is_file():
                    problems.append(f"{rel}: leftover temporary file of an interrupted write; delete it "
                                    "(or rerun the build command, which rewrites the group)")
            elif path.is_file() and "/c/" in f"/{rel}" and rel not in known:
                problems.append(f"{rel}: chunk that no commit record claims (an interrupted write?); "
                                "Zarr readers would take it as data: delete it or rerun the build")
        group = None if problems else _split_group(store, split)
        for unit in info["shards"] if group is not None else []:
            lo, hi = unit["items"]
            try:
                n = int(group["present"][unit["variant"], lo:hi].sum())
            except Exception as exc:  # a damaged array: named, not a traceback
                problems.append(f"shard {unit['path']}: present flags unreadable ({type(exc).__name__}: {exc})")
                continue
            if n != unit["samples"]:
                problems.append(f"shard {unit['path']}: holds {n} samples, the manifest records {unit['samples']}")
    return problems
