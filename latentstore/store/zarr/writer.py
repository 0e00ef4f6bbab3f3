"""Zarr v3 stores, committed atomically per item group, whole chunks only.

Layout of split S (docs/FORMAT.md, "Zarr backend"): one array per field, indexed
``[variant, item, ...]`` where item is the image's position in the sorted
source list (rejected images leave a slot that ``present`` marks False):

- fixed-shape fields (y_hat, symbols, means, scales, z_symbols, label,
  label_map): ``S/<field>`` of shape ``[V, N, *sample shape]``, in Zarr
  shards of ``[1, s, *sample shape]`` holding chunks ``[1, c, *sample shape]``,
  c | s | ``--shard-size``: s is the whole item group unless that shard would
  pass SHARD_BYTES, so a field of a (variant, group) unit is one file, or a
  few (a Cityscapes train store with 80 variants has tens of thousands of
  files, not a million);
- ``S/present``: bool ``[V, N]``;
- variable-length fields (y_string, z_string, meta as JSON): ``S/<field>/bytes``,
  uint8 ``[V, G, 2**40]`` (row ``[v, j]`` is the concatenation of group j's
  values, no padding between them) and ``S/<field>/offsets``, int64
  ``[V, N, 2]`` (start, stop) within that row.

Why staging: Zarr reads a missing chunk back as fill_value, silently. Chunks
of a group are therefore written into a private staging store
(``S/.tmp-group-<j>-<pid>/chunks``, unsharded: whole chunks are flushed as the
group's samples arrive, so memory stays bounded), copied at commit into whole
shards (``.../shards``, one (field, variant) at a time), fsynced, renamed into
place, and only then is the commit record ``S/group-<j>.json`` written,
listing every file with its size and digests (latentstore/store/checksum.py). A file that no record lists, or
a record whose file is gone, is caught by ``zarr.reader.verify`` and by the
reader (a missing file is an error, never zeros); a resumed build rewrites
the group.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from ...errors import StoreError
from ..checksum import file_record
from ..format import (
    ZARR_STORED_DTYPE,
    ZARR_TEMP_PREFIX,
    ZARR_VLEN_FIELDS,
    commit_record_name,
    encode_field,
    fsync_dir,
    get_field,
    member_size,
    write_json_atomic,
)
from ..locks import pid_alive
from ..sample import Sample

ROW_CAPACITY = 2 ** 40        # length of a bytes row; only written chunks exist on disk
ROW_CHUNK = 1 << 19           # bytes per chunk of a bytes row
BUFFER_BYTES = 256 << 20      # fixed-field samples held per group before whole chunks are written
SHARD_BYTES = 256 << 20       # most uncompressed bytes of one shard (it is built in memory at commit)
#: compressor choices measured in docs/FORMAT.md; all are core Zarr v3 codecs (any v3 reader opens them)
COMPRESSORS = {
    "blosc-zstd-shuffle": lambda: (BloscCodec(cname="zstd", clevel=5, shuffle="shuffle"),),
    "blosc-zstd-bitshuffle": lambda: (BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"),),
    "zstd": lambda: (ZstdCodec(level=5),),
    "none": lambda: (),
}
COMPRESSOR = "blosc-zstd-shuffle"
LOCK_FILE = ".layout.lock"


def unit_name(split: str, variant: int, group: int) -> str:
    """What error messages call a (variant, group) unit: the zarr twin of a tar shard's name."""
    return f"{split}/v{variant:03d}-{group:06d}"


def chunk_items(shard_size: int, variants: int, sample_bytes: int) -> int:
    """Items per chunk: the largest divisor of shard_size whose chunks of all variants fit BUFFER_BYTES."""
    best = 1
    for d in range(1, shard_size + 1):
        if shard_size % d == 0 and d * variants * max(sample_bytes, 1) <= BUFFER_BYTES:
            best = d
    return best


def shard_items(shard_size: int, c: int, item_bytes: int) -> int:
    """Items per shard: the largest multiple of c dividing shard_size whose shard fits SHARD_BYTES
    (so a unit's array is one file unless it is bigger than that), at least c."""
    fits = [d for d in range(c, shard_size + 1, c) if shard_size % d == 0 and d * item_bytes <= SHARD_BYTES]
    return max(fits, default=c)


def array_specs(values: dict, variants: int, total_items: int, groups: int, c: int, shard_size: int) -> dict:
    """{array path: (shape, chunks, shards, dtype)} for a split whose samples look like `values`.
    shards is None for the bytes rows (a shard of a 2**40-byte row would need a 32 MiB index)."""
    def per_item(dtype, *sample_shape):
        items = shard_items(shard_size, c, dtype.itemsize * int(np.prod(sample_shape, dtype=np.int64)))
        return (variants, total_items, *sample_shape), (1, c, *sample_shape), (1, items, *sample_shape), dtype

    specs = {"present": per_item(np.dtype(bool))}
    for name, value in values.items():
        if name in ZARR_VLEN_FIELDS:
            specs[f"{name}/bytes"] = ((variants, groups, ROW_CAPACITY), (1, 1, ROW_CHUNK), None, np.dtype(np.uint8))
            specs[f"{name}/offsets"] = per_item(np.dtype(np.int64), 2)
        else:
            a = np.asarray(value)
            specs[name] = per_item(np.dtype(ZARR_STORED_DTYPE.get(name, a.dtype)), *a.shape)
    return specs


def unsharded(specs: dict) -> dict:
    """The same arrays in plain chunks: the staging layout a group's samples are flushed into."""
    return {path: (shape, chunks, None, dtype) for path, (shape, chunks, _, dtype) in specs.items()}


def _existing_chunk_items(root: Path, split: str) -> int | None:
    """Items per chunk of a split already in the store at `root`, or None."""
    try:
        return zarr.open_group(str(root), mode="r")[split]["present"].chunks[1]
    except (KeyError, FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None


@contextmanager
def _layout_lock(root: Path):
    """Serialize creating array metadata between parallel parts (flock on a file in the store)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_arrays(root: Path, split: str, specs: dict) -> zarr.Group:
    """Create the split's arrays under `root`, or check that existing ones match `specs`.

    Parallel parts (--part, --encoders) call this at once; the lock makes one of
    them create each zarr.json and the others find and check it. Chunk files need
    no lock: every group writes only its own whole chunks.
    """
    with _layout_lock(root):
        return _ensure_arrays(root, split, specs)


def _ensure_arrays(root: Path, split: str, specs: dict) -> zarr.Group:
    group = zarr.open_group(str(root), mode="a", zarr_format=3).require_group(split)
    for path, (shape, chunks, shards, dtype) in specs.items():
        parent, _, name = path.rpartition("/")
        node = group.require_group(parent) if parent else group
        if name not in node:
            try:
                node.create_array(name, shape=shape, chunks=chunks, shards=shards, dtype=dtype, fill_value=0,
                                  compressors=COMPRESSORS[COMPRESSOR](),
                                  config={"write_empty_chunks": True})
                continue
            except zarr.errors.ContainsArrayError:
                pass  # a parallel part created it first
        arr = node[name]
        have = (tuple(arr.shape), tuple(arr.chunks), arr.shards and tuple(arr.shards), arr.dtype)
        if have != (tuple(shape), tuple(chunks), shards and tuple(shards), dtype):
            raise StoreError(f"{root}/{split}/{path} has shape, chunks, shards, dtype {have}; this build needs "
                             f"{(shape, chunks, shards, dtype)}: the split was started with other arguments or "
                             "another latentstore. Use a new --out.")
    return group


class ZarrGroupWriter:
    """Item group `group` of a split into the Zarr store: its chunks staged, then all of them renamed
    into place by ``commit`` (the record last), or none by ``discard``. Driven by commit.GroupCommit."""

    def __init__(self, store: Path, layout):
        self.store, self.split, self.group, self.variants = store, layout.split, layout.group, layout.variants
        self.items = list(layout.item_keys)
        self.first, self.total, self.shard_size = layout.first_item, layout.total_items, layout.shard_size
        self.groups = -(-self.total // self.shard_size)
        self.slot = {key: self.first + i for i, key in enumerate(self.items)}
        self.staging = self.store / self.split / f"{ZARR_TEMP_PREFIX}{self.group:06d}-{os.getpid()}"
        self._specs: dict = {}
        self._arrays = None          # staging group, made when the first sample shows the shapes
        self._names: tuple = ()
        self._c = 1
        self._pending: dict = {}     # (variant, chunk index) -> {item: {field: value}}
        self._flushed: set = set()
        self._rows: dict = {}        # (variant, vlen field) -> [bytes written, pending bytearray]
        self._counts = [0] * self.variants

    def open(self) -> None:
        # A killed earlier attempt at this group left its staging behind: it holds no data. A live
        # process's staging (a concurrent convert or add-teacher) is its own.
        for stale in self.staging.parent.glob(f"{ZARR_TEMP_PREFIX}{self.group:06d}-*"):
            owner = stale.name.rpartition("-")[2]
            if not (owner.isdigit() and pid_alive(int(owner))):
                shutil.rmtree(stale, ignore_errors=True)

    def write(self, sample: Sample) -> dict:
        values, variant = sample.values(), sample.variant
        sizes = {get_field(name).ext: member_size(name, value) for name, value in values.items()
                 if name not in ZARR_VLEN_FIELDS}
        item = sample.meta.item
        if item not in self.slot:
            raise StoreError(f"internal error: sample {sample.key} is not an item of group {self.group}")
        if self._arrays is None:
            self._setup(values)
        if tuple(sorted(values)) != self._names:
            raise StoreError(f"sample {sample.key} has fields {sorted(values)}, the split stores "
                             f"{list(self._names)}: every sample of a Zarr split has the same fields")
        slot = self.slot[item]
        for name in ZARR_VLEN_FIELDS:
            if name in values:
                written, buf = self._rows.setdefault((variant, name), [0, bytearray()])
                start = written + len(buf)
                buf += encode_field(name, values[name])  # the exact bytes a tar member would hold
                sizes[get_field(name).ext] = written + len(buf) - start
                values[name] = np.array([start, written + len(buf)], dtype=np.int64)
                self._write_row(variant, name, final=False)
        chunk = slot // self._c
        for pending in [k for k in self._pending if k[1] < chunk]:
            self._flush(*pending)  # items arrive in order: earlier chunks are complete
        self._pending.setdefault((variant, chunk), {})[slot] = values
        self._counts[variant] += 1
        return sizes

    def finish_variant(self, variant: int) -> None:
        """No more samples of `variant` will come: write its pending chunks now (add-teacher
        rewrites a group variant by variant; without this each variant's last chunk would wait)."""
        for pending in [k for k in self._pending if k[0] == variant]:
            self._flush(*pending)

    def _setup(self, values: dict) -> None:
        fixed = {n: np.asarray(v) for n, v in values.items() if n not in ZARR_VLEN_FIELDS}
        sample_bytes = sum(np.dtype(ZARR_STORED_DTYPE.get(n, v.dtype)).itemsize * v.size for n, v in fixed.items())
        # A split that exists keeps its chunking (add-teacher adds bigger fields to it).
        self._c = _existing_chunk_items(self.store, self.split) or \
            chunk_items(self.shard_size, self.variants, sample_bytes)
        self._specs = array_specs(values, self.variants, self.total, self.groups, self._c, self.shard_size)
        ensure_arrays(self.store, self.split, self._specs)
        self.staging.mkdir(parents=True)
        self._arrays = ensure_arrays(self.staging / "chunks", self.split, unsharded(self._specs))
        self._names = tuple(sorted(values))

    def _flush(self, variant: int, chunk: int) -> None:
        """Write one whole chunk row of every fixed array (rejected items stay 0, present False)."""
        samples = self._pending.pop((variant, chunk), {})
        lo = chunk * self._c
        hi = min(lo + self._c, self.total)
        present = np.zeros(hi - lo, dtype=bool)
        present[[s - lo for s in samples]] = True
        self._arrays["present"][variant, lo:hi] = present
        for name in self._names:
            arr = self._arrays[f"{name}/offsets" if name in ZARR_VLEN_FIELDS else name]
            block = np.zeros((hi - lo, *arr.shape[2:]), dtype=arr.dtype)
            for s, values in samples.items():
                value = np.asarray(values[name])
                if value.dtype.kind in "iu" and arr.dtype != value.dtype and value.size and \
                        not (np.iinfo(arr.dtype).min <= value.min() and value.max() <= np.iinfo(arr.dtype).max):
                    raise StoreError(f"item {self.items[s - self.first]}: {name} values exceed {arr.dtype}")
                block[s - lo] = value
            arr[variant, lo:hi] = block
        self._flushed.add((variant, chunk))

    def _write_row(self, variant: int, name: str, final: bool) -> None:
        """Write the whole ROW_CHUNKs of a bytes row that are complete (all of it when final)."""
        written, buf = self._rows[(variant, name)]
        n = len(buf) if final else len(buf) // ROW_CHUNK * ROW_CHUNK
        if n:
            self._arrays[f"{name}/bytes"][variant, self.group, written:written + n] = np.frombuffer(bytes(buf[:n]), np.uint8)
            self._rows[(variant, name)] = [written + n, buf[n:]]

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def commit(self, record: dict) -> dict:
        """Move every staged chunk into place, then write `record` (with the units' entries) last."""
        try:
            return self._commit(record)
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)

    def _commit(self, record: dict) -> dict:
        units = [{"path": unit_name(self.split, v, self.group), "split": self.split, "variant": v,
                  "group": self.group, "items": [self.first, self.first + len(self.items)],
                  "samples": self._counts[v], "fields": list(self._names), "bytes": 0, "files": []}
                 for v in range(self.variants)]
        if self._arrays is not None:
            for v, chunk in sorted(self._pending):
                self._flush(v, chunk)
            for v in range(self.variants):  # chunks of items that were all rejected still exist
                for chunk in range(self.first // self._c, -(-(self.first + len(self.items)) // self._c)):
                    if (v, chunk) not in self._flushed:
                        self._flush(v, chunk)
            for v, name in list(self._rows):
                self._write_row(v, name, final=True)
            sharded = self._to_shards()
            self._move_chunks(units, self.staging / "shards", lambda path: True)
            self._move_chunks(units, self.staging / "chunks", lambda path: path not in sharded)
        record = {"group": self.group, "shards": units, **record}
        write_json_atomic(self.store / commit_record_name(self.split, self.group), record)
        return record

    def _to_shards(self) -> set:
        """Copy the group's region of every sharded array from the chunk staging into whole shards,
        one shard at a time (at most SHARD_BYTES in memory); return the paths of those arrays."""
        sharded = {path for path, spec in self._specs.items() if spec[2] is not None}
        shards = ensure_arrays(self.staging / "shards", self.split,
                               {path: self._specs[path] for path in sharded})
        lo, hi = self.first, self.first + len(self.items)
        for path in sorted(sharded):
            step = self._specs[path][2][1]
            for v in range(self.variants):
                for start in range(lo, hi, step):
                    stop = min(start + step, hi)
                    shards[path][v, start:stop] = self._arrays[path][v, start:stop]
        return sharded

    def _move_chunks(self, units: list, staging: Path, wanted) -> None:
        """fsync every staged chunk (or shard) file of the arrays `wanted(path)` accepts, rename it into
        the store, fsync the folders; list it in its unit."""
        src_root, dst_root = staging / self.split, self.store / self.split
        folders = set()
        for src in sorted(p for p in src_root.rglob("*") if p.is_file() and p.name != "zarr.json"):
            rel = src.relative_to(src_root)
            if not wanted("/".join(rel.parts[:rel.parts.index("c")])):
                continue
            variant = int(rel.parts[rel.parts.index("c") + 1])  # chunk key c/<variant>/...
            with open(src, "rb") as f:
                os.fsync(f.fileno())
            dst = dst_root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            entry = {"path": f"{self.split}/{rel.as_posix()}", **file_record(src)}
            os.replace(src, dst)
            folders.add(dst.parent)
            units[variant]["files"].append(entry)
            units[variant]["bytes"] += entry["bytes"]
        for folder in sorted(folders):
            fsync_dir(folder)
