"""Strict reading of latentstore Zarr stores: the same Samples as the tar reader.

Zarr itself reads a missing chunk as fill_value without a word, and blosc has
no checksum (a flipped byte decodes to other numbers), so nothing is read
before the unit's files of the arrays being read (listed with size and digests
in the manifest) are checked: size always, the digest once per process and file
(latentstore/store/checksum.py; memoized by path, size and mtime, so later epochs do
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

from ...errors import ConfigError, StoreError
from ..checksum import check_once, file_problem
from ..format import (
    MANIFEST,
    ZARR_STORED_DTYPE,
    ZARR_TEMP_PREFIX,
    ZARR_VLEN_FIELDS,
    commit_record_name,
    get_field,
    read_manifest,
    smallest_int_dtype,
)
from ..paths import store_file, zarr_array_of
from ..sample import ReadError, Sample, SampleMeta
from .writer import COMPRESSOR, COMPRESSORS, ROW_CAPACITY, ROW_CHUNK, shard_items


def _split_group(store: Path, split: str) -> zarr.Group:
    try:
        return zarr.open_group(str(store), mode="r")[split]
    except (KeyError, ValueError, FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise StoreError(f"{store}: no Zarr group {split!r} ({exc}); the store is damaged") from exc


#: stored dtypes the manifest does not name: float32 side information, uint8 label maps; teacher maps
#: are float16, bfloat16 bits (uint16) or int8 (their scale float32)
_FIXED_DTYPES = {"means": ("float32",), "scales": ("float32",), "label_map": ("uint8",)}
_TEACHER_DTYPES = ("float16", "uint16", "int8", "float32")
_Y_SHAPED = ("y_hat", "symbols", "means", "scales")
_CANONICAL: dict = {}
_MANIFESTS: dict = {}


def _canonical_metadata(shape, chunks, shards, dtype) -> dict:
    """The zarr.json the writer makes for an array of this shape, chunking and dtype (its codecs with
    their settings, fill value 0, no attributes), as Zarr's own dict."""
    key = (tuple(shape), tuple(chunks), shards and tuple(shards), dtype)
    if key not in _CANONICAL:
        made = zarr.create_array(zarr.storage.MemoryStore(), shape=shape, chunks=chunks, shards=shards,
                                 dtype=dtype, fill_value=0, compressors=COMPRESSORS[COMPRESSOR](),
                                 zarr_format=3, write_data=False)
        _CANONICAL[key] = made.metadata.to_dict()
    return _CANONICAL[key]


def array_problem(array, path: str, info: dict) -> str | None:
    """Why the array `path` of a split ("y_hat", "meta/bytes") as Zarr opened it (inline zarr.json or
    consolidated metadata alike) is not the one the store's manifest describes, or None.

    The description is derived, not trusted: the dtype, the variant and image counts, the sample
    shape (ŷ-shaped fields: the manifest's latent_shape; other fields: no more bytes than the
    manifest's bytes per sample), the writer's chunking for that shape, and then the whole
    metadata (codecs and their settings such as endian, fill value) must equal what the writer
    makes for it. Checked before anything is read, so an edited description never allocates."""
    meta = array.metadata
    shape, dtype = tuple(meta.shape), str(array.dtype)
    field, _, part = path.partition("/")
    variants, images = info["variants"], info["images_found"]
    if part == "bytes":
        want_shape, chunks, shards, dtypes = (variants, -(-images // info["config"]["shard_size"]), ROW_CAPACITY), \
            (1, 1, ROW_CHUNK), None, ("uint8",)
        sample = ()
    else:
        sample = (2,) if part == "offsets" else () if field in ("present", "label") else shape[2:]
        dtypes = ("int64",) if part == "offsets" else ("bool",) if field == "present" else \
            (info["config"].get("y_hat_dtype"),) if field == "y_hat" else \
            (np.dtype(ZARR_STORED_DTYPE[field]).name,) if field in ZARR_STORED_DTYPE else \
            _FIXED_DTYPES.get(field) or (_TEACHER_DTYPES if get_field(field) else ())
        want_shape = (variants, images, *sample)
        if field in _Y_SHAPED and list(sample) != list(info.get("latent_shape", sample)):
            return f"shape {list(shape)}, the manifest's latent_shape is {info.get('latent_shape')}"
        chunks, shards = None, None
    if dtype not in dtypes:
        return f"data_type {dtype!r}, the store writes {' or '.join(map(repr, dtypes))}"
    if shape != want_shape:
        return f"shape {list(shape)}, the manifest describes {list(want_shape)}"
    itemsize = np.dtype(dtype).itemsize
    if part != "bytes":
        ext = (get_field(field) or get_field("y_hat")).ext
        recorded = info.get("bytes_per_sample", {}).get(ext)
        data = itemsize * int(np.prod(sample, dtype=np.int64))
        # integer fields are narrowed in the tar bytes the manifest counts: at least one byte per element
        least = data // itemsize if field in ZARR_STORED_DTYPE else data
        if field not in ("present", "label", "label_map") and part != "offsets" and recorded is not None \
                and least > recorded:
            return f"samples of {data} bytes, the manifest records {recorded} bytes per sample"
        c = array.chunks[1]
        if c < 1 or info["config"]["shard_size"] % c:
            return f"chunks of {c} items, which do not divide the shard size {info['config']['shard_size']}"
        chunks = (1, c, *sample)
        shards = (1, shard_items(info["config"]["shard_size"], c, data), *sample)
    if meta.to_dict() != _canonical_metadata(shape, chunks, shards, dtype):
        return "codecs, chunking or fill value differ from what latentstore writes for it (edited?)"
    return None


def _split_info(store: Path, split: str) -> dict:
    """The manifest's entry for `split` (read once per process and manifest version): a Zarr unit is
    read against the description the manifest gives, so a store without one is refused (read_manifest)."""
    if not (store / MANIFEST).is_file():
        read_manifest(store)
    stat = (store / MANIFEST).stat()
    key = (str(store), stat.st_mtime_ns, stat.st_size)
    if key not in _MANIFESTS:
        _MANIFESTS[key] = read_manifest(store)
    return _MANIFESTS[key]["splits"][split]


def checked_arrays(store: Path, split: str, paths, info: dict | None = None) -> dict:
    """{path: zarr.Array} of the split's arrays `paths`, each checked against the manifest's description
    (array_problem) before any of its data is read; StoreError naming the array and the store if not."""
    info = info if info is not None else _split_info(store, split)
    group, arrays = _split_group(store, split), {}
    for path in paths:
        try:
            array = group[path]
        except KeyError as exc:
            raise StoreError(f"{store}: array {split}/{path} is missing; restore it or rebuild the split") from exc
        problem = array_problem(array, path, info)
        if problem:
            raise StoreError(f"{store}: array {split}/{path} has {problem}; its zarr.json (or the consolidated "
                             "metadata) was edited or damaged: restore it or rebuild the split")
        arrays[path] = array
    return arrays


def array_paths(names) -> list:
    """The arrays that hold fields `names` (and the present flags)."""
    paths = ["present"]
    for name in names:
        paths += [f"{name}/offsets", f"{name}/bytes"] if name in ZARR_VLEN_FIELDS else [name]
    return paths


def arrays_read(fields) -> set[str] | None:
    """The arrays `iter_unit` reads for `fields` (None: all): the fields', meta's (the keys) and the present
    flags. Only their chunk files need to be there: a remote store fetches no others."""
    return None if fields is None else {*fields, "meta", "present"}


def check_files(store: Path, unit: dict, arrays=None, digest: bool = True) -> None:
    """The unit's chunk files of `arrays` (names; None: all) exist with their recorded size (else Zarr would
    return zeros) and, with `digest`, match their recorded digest."""
    for f in unit["files"]:
        if arrays is not None and zarr_array_of(f["path"]) not in arrays:
            continue
        path = store_file(store, f["path"], f"shard {unit['path']}")
        problem = file_problem(path, f)
        if problem:  # Zarr would read a missing chunk as zeros
            raise StoreError(f"shard {unit['path']}: chunk file {f['path']} {problem}. Run `latentstore verify` "
                             "and rebuild the group (rerun the build command).")
        if digest and not check_once(path, f):
            raise StoreError(f"shard {unit['path']}: chunk file {f['path']} differs from its record "
                             "(checksum): its samples cannot be trusted. Run `latentstore verify` and "
                             "rebuild the group (rerun the build command)")


def _convert(name: str, value):
    """A stored value as the tar reader decodes it."""
    if name == "label":
        return int(value)
    if name in ("symbols", "z_symbols"):
        return value.astype(smallest_int_dtype(value))
    if name in ZARR_VLEN_FIELDS:
        return value
    return np.ascontiguousarray(value)


def _block(group: dict, names, variant: int, lo: int, hi: int, row: int) -> dict:
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
              wanted: Container[int] | None = None, check_digest: bool = True) -> Iterator[Sample | ReadError | None]:
    """Yield the samples of one (variant, group) unit, as ``iter_shard`` does for a tar shard
    (None in place of samples whose index is not in `wanted`).

    Raises StoreError naming the unit (and key) when a chunk file is missing or
    resized, differs from its digest (only with `check_digest`: off for a caller
    that has just checked the digests itself), or the unit's sample count is not
    the recorded one. With ``lenient=True`` such damage comes as one ReadError
    with key None, and a sample that does not decode as a ReadError naming it.
    """
    store, name = Path(store), unit["path"]
    try:
        arrays = arrays_read(fields)
        names = [n for n in unit["fields"] if arrays is None or n in arrays]
        check_files(store, unit, arrays, digest=check_digest)
        group = checked_arrays(store, unit["split"], array_paths(names))
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
        yield ReadError(name, None, str(error))
        return
    for index, i in enumerate(np.flatnonzero(present).tolist()):
        if wanted is not None and index not in wanted:
            yield None
            continue
        key = f"#{index}"
        try:
            meta = json.loads(block["meta"][i])
            key = meta["key"]
            values = {field: _convert(field, block[field][i]) for field in names
                      if field != "meta" and (fields is None or field in fields)}
            wants_meta = fields is None or "meta" in fields
            sample = Sample(key, unit["variant"], values, SampleMeta.from_dict(meta, f"shard {name}, key {key}")
                            if wants_meta else None, name)
        except Exception as exc:
            error = StoreError(f"shard {name}, key {key}: does not decode ({type(exc).__name__}: {exc})")
            if not lenient:
                raise error from exc
            yield ReadError(name, key, str(error))
            continue
        yield sample


class KeyIndex:
    """Random access by sample key ``<item>_v<variant>`` through the split's commit records."""

    def __init__(self, store, manifest: dict, split: str):
        self.store, self.split = Path(store), split
        info = self.info = manifest["splits"][split]
        self.units = {(u["variant"], u["group"]): u for u in info["shards"]}
        self.items: dict = {}
        for group in sorted({u["group"] for u in info["shards"]}):
            record = json.loads((self.store / commit_record_name(split, group)).read_text())
            first = next(u for u in record["shards"])["items"][0]
            self.items.update({key: (group, first + i) for i, key in enumerate(record["items"])})

    def get(self, key: str, fields: tuple | None = None) -> Sample:
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
        zgroup = checked_arrays(self.store, self.split, array_paths(names), self.info)
        if not zgroup["present"][unit["variant"], slot]:
            raise ConfigError(f"No sample {key!r}: its image was rejected at build time (see the manifest)")
        try:
            block = _block(zgroup, names, unit["variant"], slot, slot + 1, group)
        except Exception as exc:
            raise StoreError(f"shard {unit['path']}, key {key}: unreadable Zarr data ({type(exc).__name__}: "
                             f"{exc}); run `latentstore verify`") from exc
        values = {n: _convert(n, block[n][0]) for n in names if n != "meta"}
        meta = SampleMeta.from_dict(json.loads(block["meta"][0]), f"shard {unit['path']}, key {key}") \
            if "meta" in names else None
        return Sample(key, unit["variant"], values, meta, unit["path"])


def metadata_problems(store: Path, split: str, info: dict) -> list[str]:
    """Problems of the description of every array the split's units use, as Zarr opens it (its zarr.json
    or the split's consolidated metadata): missing, unreadable, or not what the manifest describes
    (array_problem)."""
    problems, names = [], set()
    for unit in info["shards"]:
        names |= set(unit["fields"])
    try:
        group = _split_group(store, split)
    except StoreError as exc:
        return [str(exc)]
    for name in array_paths(sorted(names)):
        rel = f"{split}/{name}/zarr.json"
        try:
            problem = array_problem(group[name], name, info)
        except KeyError:
            problem = f"missing; the array {split}/{name} cannot be read (restore it or rebuild the split)"
        except Exception as exc:  # noqa: BLE001 - zarr raises many types for a damaged description
            problem = f"damaged ({type(exc).__name__}: {exc})"
        if problem:
            problems.append(f"{rel}: {problem}")
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
