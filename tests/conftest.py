"""Tiny real fixtures: photos from the bundled demo set, downscaled, and coder checkpoints."""
import os
from pathlib import Path

from latentstore.store.numerics import PORTABLE_ENV

# The tests run with the portable pins in place before torch loads, as a portable build's processes
# do: in-process builds (the default, portable) then need no restart, and CompressAI's reference
# compress()/decompress() compute with the same kernels as the stores they check. Tests of the
# native mode restart the command without them (latentstore.commands.cli.main does).
os.environ.update(PORTABLE_ENV)

import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image

DEMO = Path(__file__).resolve().parents[1] / "latentstore" / "data" / "demo-imagenet"

# CompressAI's own compress()/decompress() are the tests' reference, and their bits
# depend on torch's thread count: run them at the count the store is made with.
from latentstore.store.threads import STORE_THREADS  # noqa: E402

torch.set_num_threads(STORE_THREADS)


def demo_photos():
    return sorted((DEMO / "train").glob("*/*.JPEG"))


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """An ImageFolder tree, train split: 2 classes x 3 small real photos of varied sizes."""
    root = tmp_path_factory.mktemp("tiny")
    sizes = [(90, 60), (64, 64), (50, 120)]
    for n, photo in enumerate(demo_photos()[:2]):
        folder = root / "train" / f"class{n}"
        folder.mkdir(parents=True)
        src = Image.open(photo).convert("RGB")
        for i, size in enumerate(sizes):
            src.resize(size, Image.BILINEAR).save(folder / f"img{i}.png")
    return root


def tiny_config(root, out, **overrides):
    """The tests' usual build: bmshj2018-hyperprior q1 with seeded untrained weights (non-trivial
    symbols, no loop: seconds), 64 px crops, one variant; `overrides` are any other BuildConfig field."""
    from latentstore.build.run import BuildConfig

    return BuildConfig(**{"coder": "bmshj2018-hyperprior", "quality": 1, "weights": "untrained",
                          "dataset": "imagefolder", "split": "train", "variants": 1, "crop": 64,
                          "root": str(root), "out": str(out), **overrides})


def tiny_store(root, out, **overrides) -> Path:
    """Build `tiny_config(root, out, **overrides)` and return the store's folder."""
    from latentstore.build.run import build

    build(tiny_config(root, out, **overrides), progress=False)
    return Path(out)


def _tree_state(root) -> list:
    """(path, size, mtime) of every file under `root`: a changed source tree is another build."""
    root = Path(root)
    return [(p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()]


@pytest.fixture(scope="session")
def store_cache(tmp_path_factory):
    """`store_cache(cfg)` does what `build(cfg, progress=False)` does to a new (or empty) `cfg.out`, and
    returns the same: the first call with these arguments builds under this session's basetemp, every call
    copies that store into `cfg.out`. So a test gets a store of its own to read, damage, resume or seal
    without paying a build through CompressAI each time. A store's bytes depend only on its inputs and
    arguments, never on --out (tests/test_build.py checks that), so the copy is the store a build would
    write there. The key is every build argument but --out, plus the state of the source tree. Each
    pytest-xdist worker has its own basetemp, so each builds its own first copy. Use it only where the
    build itself is not under test: a test that monkeypatches, times, counts or watches a build builds."""
    import copy
    import json
    import shutil
    from dataclasses import asdict, replace

    from latentstore.build.run import build

    folder, made = tmp_path_factory.mktemp("store-cache"), {}

    def built(cfg):
        key = json.dumps({**asdict(cfg), "out": None, "root": str(Path(cfg.root).resolve()),
                          "tree": _tree_state(cfg.root)}, sort_keys=True, default=str)
        if key not in made:
            first = folder / f"{len(made)}"
            made[key] = first, build(replace(cfg, out=str(first)), progress=False)
        first, result = made[key]
        out = Path(cfg.out)
        assert not out.exists() or not any(out.iterdir()), f"{out} is not a new store: build into it instead"
        shutil.copytree(first, out, dirs_exist_ok=True)
        return copy.deepcopy(result)

    return built


@pytest.fixture(scope="session")
def tiny_store_copy(store_cache):
    """`tiny_store_copy(root, out, **overrides)`: `tiny_store` through the session's `store_cache`."""

    def make(root, out, **overrides) -> Path:
        store_cache(tiny_config(root, out, **overrides))
        return Path(out)

    return make


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory):
    """Save a seeded untrained coder with non-trivial symbols as a CompressAI checkpoint file."""
    from latentstore.coders.registry import get_spec, untrained_coder

    folder = tmp_path_factory.mktemp("ckpt")

    def make(coder: str, quality: int, seed: int = 0) -> Path:
        path = folder / f"{coder}-{quality}-{seed}.pth.tar"
        if not path.exists():
            torch.save(untrained_coder(get_spec(coder), quality, seed=seed).state_dict(), path)
        return path

    return make


def count_digest_passes(monkeypatch, store):
    """A Counter, filled as the test goes on, of the passes that digest each file of `store` (path
    relative to it): every checksum.file_record (sha256 + CRC-32C) and checksum.read_check (the
    reader's check). The reader's per-process memo starts empty, so no earlier read hides a pass."""
    from collections import Counter

    from latentstore.store import checksum

    store, passes = Path(store).resolve(), Counter()
    monkeypatch.setattr(checksum, "_CHECKED", set())
    for name in ("file_record", "read_check"):
        def counted(path, *args, _digest=getattr(checksum, name)):
            where = Path(path).resolve()
            if where.is_relative_to(store):
                passes[where.relative_to(store).as_posix()] += 1
            return _digest(path, *args)
        monkeypatch.setattr(checksum, name, counted)
    return passes


def recorded_files(store, indexes: bool = False):
    """{path: 1} for every data file the manifest of `store` records (tar shards, Zarr chunk files),
    and with `indexes` the tar shards' sample indexes too."""
    import json

    manifest = json.loads((Path(store) / "manifest.json").read_text())
    return {f["path"]: 1 for split in manifest["splits"].values() for shard in split["shards"]
            for f in [*shard.get("files", [shard]), *([shard["index"]] if indexes and "index" in shard else [])]}
