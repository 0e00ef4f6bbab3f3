"""Stores are byte-identical to the recorded ones: every backend, convert, add-teacher, segmentation.

Refactoring the pipeline must not change a byte of what it writes. This test builds small
stores through the real CLI and compares the sha256 of every file with tests/golden/stores.json.
Sources get a fixed mtime and absolute paths are replaced by placeholders, so the digests depend
only on the code, torch and the CPU.

After a change that is meant to alter stores (a format or encoder revision), or on another torch
or CPU family, regenerate the record from a commit known to be right:

    python tests/test_golden.py --write
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import demo_photos  # noqa: E402
from test_cityscapes import make_cityscapes  # noqa: E402

from latentstore.cli import main  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "stores.json"
MTIME_NS = 1_700_000_000_000_000_000
COMMON = ["--weights", "untrained", "--crop", "64", "--shard-size", "2", "--quiet"]
TEACHER = ["--teacher", "resnet18", "--teacher-weights", "untrained", "--teacher-strides", "8,16"]


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


def build_all(work: Path) -> dict:
    """{store name: {relative path: sha256}} of every golden store, built under `work`."""
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
    cli("build", *imagefolder, "--out", s / "webdataset-cheng2020", "--coder", "cheng2020-anchor",
        "--quality", "1", "--y-hat-dtype", "float32", "--encoders", "2", "--batch-size", "1", *COMMON)
    cli("build", "--dataset", "cityscapes", "--root", city, "--split", "train", "--augment", "seg-train",
        "--variants", "2", "--out", s / "cityscapes-zarr", "--format", "zarr", "--coder", "cheng2020-anchor",
        "--quality", "1", *COMMON)
    cli("convert", s / "webdataset", s / "webdataset-to-zarr", "--format", "zarr", "--quiet")
    cli("convert", s / "zarr", s / "zarr-to-webdataset", "--format", "webdataset", "--quiet")
    return {store.name: digests(store, {str(folder): "<FOLDER>", str(city): "<CITYSCAPES>", str(s): "<STORES>"})
            for store in sorted(s.iterdir())}


def digests(store: Path, placeholders: dict) -> dict:
    out = {}
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".json":  # absolute paths of this run's folders
            for real, name in placeholders.items():
                data = data.replace(real.encode(), name.encode())
        out[path.relative_to(store).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


@pytest.mark.slow
def test_stores_are_byte_identical_to_the_recorded_ones(tmp_path):
    recorded, built = json.loads(GOLDEN.read_text()), build_all(tmp_path)
    assert sorted(built) == sorted(recorded)
    for name in recorded:
        changed = sorted(p for p in recorded[name].keys() | built[name].keys()
                         if recorded[name].get(p) != built[name].get(p))
        assert not changed, f"store {name}: files differ from tests/golden/stores.json: {changed[:8]}"


if __name__ == "__main__":
    import tempfile
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as work:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(build_all(Path(work)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
