"""Stores are the recorded ones, on any x86-64 machine: every backend, convert, add-teacher, segmentation.

Refactoring the pipeline must not change a byte of what it writes. This test builds small
stores through the real CLI and compares them with tests/golden/stores.json. Sources get a fixed
mtime and absolute paths are replaced by placeholders, so the digests depend only on the code, the
recorded versions and, for a native store, the CPU's numerics:

- portable stores (the default, every store here but one) are compared file by file, everywhere:
  their floats are computed with the CPU dispatch pinned (latentstore/store/numerics.py);
- the native store is compared in what no CPU changes (its integer and string members, and its
  JSON without the digests of float bytes) everywhere; its float members where the running
  machine's numerics are the recorded ones, and elsewhere by CompressAI: `verify --decode all`
  must find every stored ŷ exactly where this machine's decoder puts it.

All stores are compared before the test fails, one line per store that differs. After a change
that is meant to alter stores (a format or encoder revision), or on another torch, regenerate the
record from a commit known to be right:

    python tests/test_golden.py --write
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import demo_photos  # noqa: E402  (sets the portable pins before torch loads)
from test_cityscapes import make_cityscapes  # noqa: E402

from latentstore.store import numerics  # noqa: E402
from latentstore.commands.cli import main  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "stores.json"
MTIME_NS = 1_700_000_000_000_000_000
COMMON = ["--weights", "untrained", "--crop", "64", "--shard-size", "2", "--quiet"]
TEACHER = ["--teacher", "resnet18", "--teacher-weights", "untrained", "--teacher-strides", "8,16"]
NATIVE = "webdataset-cheng2020-native"
#: Tar members whose bytes are floats the CPU's numerics compute.
FLOAT_FIELDS = ("y_hat", "means", "scales", "teacher_")


def image_folder(root: Path) -> Path:
    """2 classes x 3 real photos at varied small sizes."""
    from PIL import Image
    for n, photo in enumerate(demo_photos()[:2]):
        folder = root / "train" / f"class{n}"
        folder.mkdir(parents=True)
        src = Image.open(photo).convert("RGB")
        for i, size in enumerate([(90, 60), (64, 64), (50, 120)]):
            src.resize(size, Image.BILINEAR).save(folder / f"img{i}.png")
    return root


def cli(*args) -> None:
    main([str(a) for a in args])  # exits (fails the test) on any error


def build_all(work: Path) -> dict[str, Path]:
    """{store name: folder} of every golden store, built under `work`; and the placeholders of its paths."""
    folder, city = image_folder(work / "folder"), make_cityscapes(work / "cityscapes")
    for path in [*folder.rglob("*"), *city.rglob("*")]:
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
    s = work / "stores"
    imagefolder = ["--dataset", "imagefolder", "--root", folder, "--split", "train", "--variants", "2"]
    for fmt in ("webdataset", "zarr"):
        cli("build", *imagefolder, "--out", s / f"{fmt}", "--format", fmt, "--coder", "mbt2018-mean",
            "--quality", "1", "--fields", "means,scales,z_symbols", *TEACHER, *COMMON)
        cli("build", *imagefolder, "--out", s / f"{fmt}-add-teacher", "--format", fmt, "--coder",
            "bmshj2018-hyperprior", "--quality", "1", *COMMON)
        cli("add-teacher", s / f"{fmt}-add-teacher", *TEACHER, "--quiet")
    cheng = [*imagefolder, "--coder", "cheng2020-anchor", "--quality", "1", "--y-hat-dtype", "float32",
             "--encoders", "2", "--batch-size", "1", *COMMON]
    cli("build", *cheng, "--out", s / "webdataset-cheng2020")
    cli("build", *cheng, "--out", s / NATIVE, "--numerics", "native")  # restarts without the pins
    cli("build", "--dataset", "cityscapes", "--root", city, "--split", "train", "--augment", "seg-train",
        "--variants", "2", "--out", s / "cityscapes-zarr", "--format", "zarr", "--coder", "cheng2020-anchor",
        "--quality", "1", *COMMON)
    cli("convert", s / "webdataset", s / "webdataset-to-zarr", "--format", "zarr", "--quiet")
    cli("convert", s / "zarr", s / "zarr-to-webdataset", "--format", "webdataset", "--quiet")
    placeholders = {str(folder): "<FOLDER>", str(city): "<CITYSCAPES>", str(s): "<STORES>"}
    return {store.name: store for store in sorted(s.iterdir())}, placeholders


def record(store: Path, placeholders: dict) -> dict:
    """What the golden file holds of one store: every file's sha256; for the native store also the
    digests of what no CPU changes, and the numerics it was built with."""
    files = {}
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        files[path.relative_to(store).as_posix()] = hashlib.sha256(_bytes(path, placeholders)).hexdigest()
    entry = {"files": files}
    if store.name == NATIVE:
        entry["numerics"] = numerics.dispatch(json.loads((store / "manifest.json").read_text())["created_by"])
        entry["cpu_independent"] = cpu_independent(store, placeholders)
    return entry


def _bytes(path: Path, placeholders: dict) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".json":  # absolute paths of this run's folders
        for real, name in placeholders.items():
            data = data.replace(real.encode(), name.encode())
    return data


def cpu_independent(store: Path, placeholders: dict) -> dict:
    """sha256 of every tar member that is not a float of the numerics, and of every JSON file with the
    digests of float bytes (and the numerics record) left out."""
    out = {}
    for path in sorted(store.rglob("*")):
        rel = path.relative_to(store).as_posix()
        if path.suffix == ".tar":
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    field = member.name.split(".", 1)[1]
                    if not field.startswith(FLOAT_FIELDS):
                        data = tar.extractfile(member).read()
                        out[f"{rel}/{member.name}"] = hashlib.sha256(data).hexdigest()
        elif path.suffix == ".json":
            canonical = _without_float_digests(json.loads(_bytes(path, placeholders)))
            out[rel] = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
    return out


def _without_float_digests(value):
    """A JSON value without CRCs, file sha256s (a dict with a "path") and created_by's numerics."""
    if isinstance(value, list):
        return [_without_float_digests(v) for v in value]
    if not isinstance(value, dict):
        return value
    dropped = {"crc32c", "numerics"} | ({"sha256"} if "path" in value else set())
    return {k: _without_float_digests(v) for k, v in value.items() if k not in dropped}


def differing(recorded: dict, built: dict) -> list[str]:
    return sorted(p for p in recorded.keys() | built.keys() if recorded.get(p) != built.get(p))


def native_problems(store: Path, recorded: dict, built: dict) -> list[str]:
    """The native store: CPU-independent parts everywhere; floats by digest where the numerics are the
    recorded ones, else by decoding with CompressAI on this machine."""
    changed = differing(recorded["cpu_independent"], built["cpu_independent"])
    if changed:
        return [f"store {store.name}: CPU-independent parts differ: {changed[:8]}"]
    if built["numerics"] == recorded["numerics"]:
        changed = differing(recorded["files"], built["files"])
        return [f"store {store.name}: files differ (same numerics as the record): {changed[:8]}"] if changed else []
    try:  # another CPU family: the floats must still be what CompressAI decodes here
        cli("verify", store, "--decode", "all", "--quiet")
    except SystemExit as exc:
        return [f"store {store.name}: built with numerics {built['numerics']} (record: {recorded['numerics']}), "
                f"and `verify --decode all` fails here (exit {exc.code})"]
    return []


@pytest.mark.slow
def test_stores_are_the_recorded_ones_on_any_machine(tmp_path):
    recorded = json.loads(GOLDEN.read_text())
    stores, placeholders = build_all(tmp_path)
    assert sorted(stores) == sorted(recorded)
    problems = []
    for name, store in stores.items():
        built = record(store, placeholders)
        if name == NATIVE:
            problems += native_problems(store, recorded[name], built)
        elif differing(recorded[name]["files"], built["files"]):
            problems.append(f"store {name}: files differ from tests/golden/stores.json: "
                            f"{differing(recorded[name]['files'], built['files'])[:8]}")
    assert not problems, "\n".join(problems)


def flip_member_byte(store: Path, suffix: str) -> None:
    """Flip the last data byte of the first tar member named *`suffix` (an array value, not its header)."""
    shard = sorted(store.rglob("*.tar"))[0]
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(suffix))
    with open(shard, "r+b") as f:
        f.seek(member.offset_data + member.size - 1)
        byte = f.read(1)[0]
        f.seek(-1, io.SEEK_CUR)
        f.write(bytes([byte ^ 1]))


@pytest.mark.slow
def test_the_native_check_catches_a_changed_byte_on_any_machine(tmp_path):
    """Not vacuous where the numerics differ from the record: a changed ŷ fails the decode check there,
    and a changed symbol fails the CPU-independent digests everywhere."""
    folder = image_folder(tmp_path / "folder")
    store = tmp_path / NATIVE
    cli("build", "--dataset", "imagefolder", "--root", folder, "--split", "train", "--coder", "mbt2018-mean",
        "--quality", "1", "--numerics", "native", "--out", store, *COMMON)
    clean = record(store, {})
    other_machine = {**clean, "numerics": {**clean["numerics"], "onednn_isa": "another CPU's"}}
    assert native_problems(store, other_machine, record(store, {})) == []
    flip_member_byte(store, ".y_hat.npy")
    assert "fails here" in native_problems(store, other_machine, record(store, {}))[0]
    flip_member_byte(store, ".symbols.npy")
    assert "CPU-independent parts differ" in native_problems(store, clean, record(store, {}))[0]


if __name__ == "__main__":
    import tempfile
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as work:
        stores, placeholders = build_all(Path(work))
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({name: record(store, placeholders) for name, store in stores.items()},
                                     indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
