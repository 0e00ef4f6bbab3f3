"""The store's code twin of docs/FORMAT.md: version, layout, field names and encodings.

Everything that decides a byte of a store lives here, so writers and readers
of both backends agree by construction. No pickle anywhere: arrays are `.npy`
with ``allow_pickle=False``, metadata is JSON, bitstreams are raw bytes.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import StoreError
from .checksum import file_problem
from .location import is_url
from .paths import check_recorded, recorded_problem, shard_files
from .remote import local_root
from .schema import check_manifest

FORMAT_NAME = "latentstore"
FORMAT_VERSION = 1
#: Bump when a change of the encoder changes what it stores (manifest created_by.encoder_revision): a build
#: resumes only into a store of its own revision, and verify names a store of another.
ENCODER_REVISION = 2
MANIFEST = "manifest.json"

LATENT_STRIDE = 16    # y is H/16 x W/16
PAD_MULTIPLE = 64     # z is H/64 x W/64, so inputs are padded to multiples of 64
PNG_LEVEL = 9         # zlib level of PNG fields; label maps are small, so favour size over speed


@dataclass(frozen=True)
class Field:
    name: str
    ext: str          # member suffix in a tar shard: "<key>.<name>.<ext>" is "<key>.<ext>" here
    kind: str         # "npy" | "bytes" | "json" | "text"
    doc: str


# Member names are "<key>.<ext>". The table is the single source of truth for
# which fields exist; docs/FORMAT.md repeats it for humans.
FIELDS = {f.name: f for f in (
    Field("y_hat", "y_hat.npy", "npy", "ŷ exactly as g_s receives it at decode, float16 (default) or float32, [C,H,W]"),
    Field("symbols", "symbols.npy", "npy", "integer symbols of y as the rANS coder wrote them, smallest int dtype, "
          "[C,H,W] (absent for coders on the generic path)"),
    Field("y_string", "y_string.bin", "bytes", "the y bitstream, exactly model.compress()'s (generic path: all "
          "streams in the strings container)"),
    Field("z_string", "z_string.bin", "bytes", "the hyper-latent z bitstream (absent for bmshj2018-factorized)"),
    Field("means", "means.npy", "npy", "Gaussian mean μ per element of y, float32 (optional: --fields means)"),
    Field("scales", "scales.npy", "npy", "Gaussian scale σ̂ per element of y, float32 (optional: --fields scales)"),
    Field("z_symbols", "z_symbols.npy", "npy", "integer symbols of z (optional: --fields z_symbols)"),
    Field("label", "cls", "text", "class index as decimal text (WebDataset convention); -1 when unlabeled"),
    Field("meta", "meta.json", "json", "key, label, variant, source, augmentation params, padding, bits, bpp"),
    Field("label_map", "label_map.png", "png", "segmentation: train ids (255 = ignore) at full crop size, uint8 [H,W]"),
)}
# symbols: every sample of a single-pass store (verify checks it from the manifest); the generic path
# cannot derive them (build/generic_encoder.py).
REQUIRED_FIELDS = ("y_hat", "y_string", "label", "meta")
OPTIONAL_FIELDS = ("means", "scales", "z_symbols")
_BY_EXT = {f.ext: f for f in FIELDS.values()}
# The Zarr backend (docs/FORMAT.md, "Zarr backend"): variable-length fields are rows of bytes plus
# per-item offsets; integer fields have a fixed stored dtype (readers narrow symbols to the smallest
# one, as tar shards store them); a group's chunks are staged under a temporary prefix.
ZARR_VLEN_FIELDS = ("y_string", "z_string", "meta")
ZARR_STORED_DTYPE = {"symbols": np.int32, "z_symbols": np.int32, "label": np.int64}
ZARR_TEMP_PREFIX = ".tmp-group-"
#: What to do when a Zarr split's dataset gained or lost images: its arrays are sized by the image count, so a
#: build cannot resume it (the build's refusal and verify's report give this same advice).
ZARR_GROWTH_ADVICE = ("A Zarr split is sized by its image count: restore the images, or build into a new --out "
                      "(or build --format webdataset, which re-encodes only the changed groups)")
# Teacher feature maps (latentstore/teacher/) are a family of npy fields, one per tap:
# "teacher_<tag>" (tag s8, s16, ... or a layer name) and, for int8, "teacher_<tag>.scale".
# Their members are "<key>.teacher_s8.npy", "<key>.teacher_s8.scale.npy": keys split at the first dot.
TEACHER_PREFIX = "teacher_"
_TEACHER_FIELD = re.compile(r"teacher_[A-Za-z0-9_]+(\.scale)?")


def get_field(name: str) -> Field | None:
    """The Field called `name`: an entry of FIELDS or a member of the teacher family."""
    if name in FIELDS:
        return FIELDS[name]
    if _TEACHER_FIELD.fullmatch(name):
        return Field(name, name + ".npy", "npy", "teacher feature map: float16, bfloat16 bits (uint16) or int8")
    return None


def smallest_int_dtype(a: np.ndarray) -> np.dtype:
    """The smallest signed integer dtype that holds every value of `a` (never clips)."""
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    for dt in (np.int8, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def file_sha256(path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_recorded_files(store, shard: dict, action: str) -> None:
    """Every file of a tar shard or Zarr unit has its recorded size and digests, before `action` reads it."""

    for f in shard.get("files", [shard]):
        problem = file_problem(Path(store) / f["path"], f, digests=True)
        if problem:
            raise StoreError(f"shard {shard['path']}: {f['path']} {problem}; {action} stops rather than carry "
                             "the damage over. Run `latentstore verify` and rebuild the damaged group.")


def recorded_files(record: dict):
    """The files a commit record (or a manifest's shard list) lists: tar shards and their sample
    indexes, or Zarr units' chunk files."""
    for shard in record["shards"]:
        for f in shard_files(shard):
            problem = recorded_problem(f.get("path"))
            if problem:
                raise StoreError(f"the record of shard {shard.get('path')}: {problem}; restore it or rebuild the group")
            yield f


def encode_npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


#: The header np.save writes for a C-order array of a plain dtype ("<f2", "|i1", "|b1", ...).
_NPY_HEADER = re.compile(r"\{'descr': '([<>|=][a-z]\d+)', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \} *\n\Z")


def decode_npy(data: bytes | memoryview) -> np.ndarray:
    """The array of an .npy file (never pickled objects), always a copy: `data` may be a view of the
    tar reader's read of a whole sample, which is not kept. Headers as np.save writes them for C-order
    arrays of plain dtypes are read here: np.load parses every header with ast.literal_eval, which
    took a quarter of the loader's time per sample. Anything else goes to np.load, which decides."""
    if data[:6] == b"\x93NUMPY" and data[6:7] in (b"\x01", b"\x02"):
        start = 10 if data[6] == 1 else 12
        end = start + int.from_bytes(data[8:start], "little")
        header = _NPY_HEADER.match(bytes(data[start:end]).decode("latin1"))
        if header:
            dtype = np.dtype(header[1])
            shape = tuple(int(n) for n in header[2].split(",") if n.strip())
            count = math.prod(shape)
            if not dtype.hasobject and len(data) >= end + count * dtype.itemsize:
                return np.frombuffer(data, dtype, count, end).reshape(shape).copy()  # a writable array, as np.load's
    return np.load(io.BytesIO(data), allow_pickle=False)  # BytesIO copies


def encode_png(a: np.ndarray) -> bytes:
    """A uint8 [H,W] map as an 8-bit grayscale PNG: lossless, and ~10x smaller than .npy for label maps."""
    from PIL import Image

    if a.dtype != np.uint8 or a.ndim != 2:
        raise ValueError(f"PNG fields hold uint8 [H,W] maps, got {a.dtype} {list(a.shape)}")
    buf = io.BytesIO()
    Image.fromarray(a, mode="L").save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if img.mode != "L":
            raise ValueError(f"expected an 8-bit grayscale PNG, got mode {img.mode}")
        return np.asarray(img, dtype=np.uint8).copy()


def encode_json(obj) -> bytes:
    # sort_keys + fixed separators: the same sample always gives the same bytes.
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def encode_field(name: str, value) -> bytes:
    kind = get_field(name).kind
    if kind == "npy":
        return encode_npy(value)
    if kind == "json":
        return encode_json(value)
    if kind == "text":
        return str(value).encode()
    if kind == "png":
        return encode_png(value)
    return bytes(value)


def member_size(name: str, value) -> int:
    """len(encode_field(name, value)), without building an array's bytes."""
    if get_field(name).kind == "npy":
        a = np.asarray(value)
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(a))
        return len(header.getvalue()) + a.nbytes
    return len(encode_field(name, value))


def decode_field(name: str, data: bytes | memoryview):
    """The value of field `name` from its member's bytes (or a view of them, never kept)."""
    kind = get_field(name).kind
    if kind == "npy":
        return decode_npy(data)
    data = bytes(data)
    if kind == "json":
        return json.loads(data)
    if kind == "text":
        return int(data.decode())
    if kind == "png":
        return decode_png(data)
    return data


def field_for_member(ext: str) -> Field | None:
    return _BY_EXT.get(ext) or (get_field(ext[:-4]) if ext.endswith(".npy") else None)


def sample_key(item_key: str, variant: int) -> str:
    """Keys carry no dots: WebDataset splits a member name at the first dot."""
    if "." in item_key:
        raise ValueError(f"sample key {item_key!r} contains a dot")
    return f"{item_key}_v{variant:03d}"


def shard_name(split: str, variant: int, group: int) -> str:
    """Shards of one variant can be globbed as ``{split}/v003-*.tar``."""
    return f"{split}/v{variant:03d}-{group:06d}.tar"


def commit_record_name(split: str, group: int) -> str:
    return f"{split}/group-{group:06d}.json"


@dataclass(frozen=True)
class Padding:
    """Where an unpadded H×W image sits inside the padded input, and which latent cells it covers."""
    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def centered(cls, height: int, width: int, multiple: int = PAD_MULTIPLE) -> "Padding":
        ph, pw = -height % multiple, -width % multiple
        return cls(ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)

    def valid_region(self, height: int, width: int, stride: int = LATENT_STRIDE) -> list:
        """[row0, row1, col0, col1), half-open, in latent cells that see any image pixel."""
        return [self.top // stride, -(-(self.top + height) // stride),
                self.left // stride, -(-(self.left + width) // stride)]

    def as_dict(self) -> dict:
        return {"top": self.top, "bottom": self.bottom, "left": self.left, "right": self.right}


def write_json_atomic(path: Path, obj) -> None:
    """Write to a temporary name, fsync, rename: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk or an unwritable value: no temporary file is left behind
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(store) -> dict:
    """The manifest of a store folder, or of a store at a URL (latentstore/store/remote.py mirrors it)."""
    if is_url(store):
        store = local_root(store)[0]
    path = Path(store) / MANIFEST
    if not path.is_file():
        raise StoreError(
            f"{store} has no {MANIFEST}: it is not a latentstore store, or its build has not "
            f"finished (the manifest is written last). Rerun the build command to complete it."
        )
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError) as exc:  # a cut or edited file; UnicodeDecodeError is a ValueError
        raise StoreError(f"{path} is damaged (not valid JSON: {exc}). The shards may be intact: "
                         f"`latentstore seal {store}` rewrites it from the part manifests, then run "
                         f"`latentstore verify {store}`") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
        raise StoreError(f"{path} is damaged (no 'splits' table); `latentstore seal {store}` rewrites it")
    if manifest.get("format") != FORMAT_NAME:
        raise StoreError(f"{path} is not a latentstore manifest (format={manifest.get('format')!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path} has format version {manifest.get('format_version')}, this latentstore reads "
            f"version {FORMAT_VERSION}: install the latentstore version that wrote it"
        )
    check_manifest(manifest, path)
    for name, split in manifest["splits"].items():  # before any consumer opens or stats a recorded file
        for shard in split.get("shards", []) if isinstance(split, dict) else []:
            for f in [shard, *shard.get("files", [])] + ([shard["index"]] if "index" in shard else []):
                check_recorded(store, f.get("path") if isinstance(f, dict) else f, f"{MANIFEST}, split {name}")
    return manifest
