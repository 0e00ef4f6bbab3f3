"""docs/reliability.md §1-§5 for tar stores: atomic commits, resume, parts + seal, verify."""
import random
import subprocess
import sys
import tarfile
import time

import pytest

from latentstore.build.run import BuildConfig, build
from latentstore.errors import ConfigError, StoreError
from latentstore.store.format import MANIFEST
from latentstore.store.seal import parse_part, seal
from latentstore.commands.verify import verify

ARGS = dict(coder="bmshj2018-hyperprior", quality=1, weights="untrained", dataset="imagefolder",
            split="train", variants=2, crop=64, shard_size=1)


def config(root, out, **kw):
    return BuildConfig(root=str(root), out=str(out), **{**ARGS, **kw})


@pytest.fixture(scope="module")
def reference(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    build(config(tiny_folder, out), progress=False)
    return out


def shard_bytes(store):
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.glob("*/*.tar"))}


def test_parts_then_seal_equal_a_plain_build(tiny_folder, tmp_path, reference):
    out = tmp_path / "parts"
    for i in (0, 2):
        assert build(config(tiny_folder, out, part=(i, 3)), progress=False) is None
    with pytest.raises(StoreError, match=r"part 1/3 is missing or unfinished \(rerun its build command with --part 1/3\)"):
        seal(out)
    assert not (out / MANIFEST).exists()
    build(config(tiny_folder, out, part=(1, 3)), progress=False)
    seal(out)
    assert (out / MANIFEST).read_bytes() == (reference / MANIFEST).read_bytes()
    assert shard_bytes(out) == shard_bytes(reference)


def test_seal_names_a_part_whose_shard_vanished(tiny_folder, tmp_path):
    out = tmp_path / "s"
    for i in range(2):
        build(config(tiny_folder, out, part=(i, 2)), progress=False)
    (out / "train" / "v001-000003.tar").unlink()
    with pytest.raises(StoreError, match=r"part 1/2: train/v001-000003.tar is missing"):
        seal(out)


@pytest.mark.parametrize("value,env,expected", [
    (None, {}, (0, 1)),
    ("3/64", {}, (3, 64)),
    ("auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1"}, (4, 8)),
    ("auto", {"RANK": "2", "WORLD_SIZE": "4"}, (2, 4)),
])
def test_part_from_flag_or_environment(value, env, expected):
    assert parse_part(value, env) == expected


@pytest.mark.parametrize("value", ["3/3", "x", "auto"])
def test_bad_part_is_explained(value):
    with pytest.raises(ConfigError, match="part"):
        parse_part(value, {})


def test_verify_passes_a_good_store_and_decodes_with_compressai(reference):
    report = verify(reference, decode=3)
    assert report.ok, report.problems
    assert report.shards == 12 and report.samples == 12 and report.decoded == 3


def copy_store(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_verify_names_every_damaged_shard(reference, tmp_path):
    store = copy_store(reference, tmp_path / "s")
    flipped = store / "train" / "v000-000002.tar"
    data = bytearray(flipped.read_bytes())
    data[700] ^= 0x01
    flipped.write_bytes(bytes(data))
    cut = store / "train" / "v001-000004.tar"
    with tarfile.open(cut) as tar:
        boundary = tar.getmembers()[-1].offset  # a valid-looking tar, one member short
    cut.write_bytes(cut.read_bytes()[:boundary])
    (store / "train" / ".v000-000009.tar.tmp-123").write_bytes(b"partial")
    report = verify(store)
    text = "\n".join(report.problems)
    assert "train/v000-000002.tar: differs from its record (checksum)" in text
    assert "train/v001-000004.tar: has " in text and "bytes, its record says" in text
    assert "leftover temporary file" in text
    assert len(report.problems) == 3


def test_verify_decode_catches_a_y_hat_that_does_not_match_the_strings(reference, tmp_path):
    """Re-pack one sample with a different ŷ but consistent digests: only decoding can tell."""
    import io
    import json
    import numpy as np
    from latentstore.store.format import encode_npy

    store = copy_store(reference, tmp_path / "s")
    manifest = json.loads((store / MANIFEST).read_text())
    shard = manifest["splits"]["train"]["shards"][0]
    path = store / shard["path"]
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m, data in members:
            if m.name.endswith(".y_hat.npy"):
                y = np.load(io.BytesIO(data))
                y.flat[0] += 1
                data = encode_npy(y)
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    from latentstore.store.checksum import file_record
    from latentstore.store.tar.reader import build_index
    shard.update(file_record(path))
    index = store / shard["index"]["path"]  # a consistent index too: only CompressAI can tell
    index.write_text(json.dumps(build_index(path, shard["path"])))
    shard["index"].update(file_record(index))
    (store / MANIFEST).write_text(json.dumps(manifest))
    report = verify(store, decode=12)
    assert len(report.problems) == 1
    assert f"shard {shard['path']}, key" in report.problems[0] and "different ŷ" in report.problems[0]


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_bytes(tiny_folder, tmp_path):
    # An autoregressive coder at 192 px: each group takes a noticeable time, so kills land mid-build.
    args = {**ARGS, "coder": "cheng2020-anchor", "crop": 192}
    reference = tmp_path / "reference"
    build(BuildConfig(root=str(tiny_folder), out=str(reference), **args), progress=False)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "latentstore", "build", "--quiet", "--root", str(tiny_folder),
           "--out", str(out)] + [f"--{k.replace('_', '-')}={v}" for k, v in args.items()]
    rng = random.Random(0)
    committed = []
    for attempt in range(4):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Let each run commit at least one more group, then kill it at a random moment after.
        deadline = time.time() + 120
        while len(list(out.glob("train/group-*.json"))) <= attempt and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.2))
        proc.kill()
        proc.wait()
        committed.append(len(list(out.glob("train/group-*.json"))))
        # Every tar at a final name is complete: it reads to its end-of-archive without error.
        for path in out.glob("*/*.tar"):
            with tarfile.open(path) as tar:
                assert len(tar.getmembers()) % 6 == 0, path  # 6 members per sample, never a torn sample
    assert 0 < committed[0] < 6, committed  # the kills did land mid-build
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    assert shard_bytes(out) == shard_bytes(reference)
    assert (out / MANIFEST).read_bytes() == (reference / MANIFEST).read_bytes()
    assert verify(out).ok


def test_member_names_that_could_escape_are_refused(tmp_path):
    import io
    from latentstore.store.readers import iter_shard
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("../outside.y_hat.npy")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(StoreError, match=r"shard evil.tar: unexpected member '../outside.y_hat.npy'"):
        list(iter_shard(path, "evil.tar"))


@pytest.mark.slow
def test_disk_full_is_a_clear_error_and_the_build_resumes(tiny_folder, tmp_path, reference):
    """RLIMIT_FSIZE makes large writes fail as a full disk would: the first shard write fails."""
    out = tmp_path / "full"
    cmd = [sys.executable, "-c", (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)); "
        "from latentstore.commands.cli import main; main(sys.argv[1:])"),
        "build", "--quiet", "--root", str(tiny_folder), "--out", str(out)] + \
        [f"--{k.replace('_', '-')}={v}" for k, v in ARGS.items()]
    failed = subprocess.run(cmd, capture_output=True, text=True)
    assert failed.returncode == 3, failed.stderr
    assert "the file size limit was reached" in failed.stderr and "rerun the same command" in failed.stderr
    assert not list(out.glob("train/*.tar")) and not (out / MANIFEST).exists()
    build(config(tiny_folder, out), progress=False)
    assert shard_bytes(out) == shard_bytes(reference)


def store_files(store):
    """Every file of a store as bytes (Zarr: chunk files and zarr.json included), but the lock
    and the part manifests (which say how the work was split)."""
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and p.name != ".layout.lock" and p.relative_to(store).parts[0] != "parts"}


@pytest.fixture(scope="module")
def zarr_reference(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("zarr-reference")
    build(config(tiny_folder, out, format="zarr"), progress=False)
    return out


def test_zarr_parts_then_seal_equal_a_plain_build(tiny_folder, tmp_path, zarr_reference):
    out = tmp_path / "parts"
    for i in (1, 0, 2):
        build(config(tiny_folder, out, format="zarr", part=(i, 3)), progress=False)
    seal(out)
    assert store_files(out) == store_files(zarr_reference)
    assert verify(out, decode=2).ok


@pytest.mark.slow
def test_concurrent_zarr_parts_write_disjoint_whole_chunks(tiny_folder, tmp_path, zarr_reference):
    """Two part processes at once: array creation is locked, chunks are disjoint; seal equals a plain build."""
    out = tmp_path / "concurrent"
    base = [sys.executable, "-m", "latentstore", "build", "--quiet", "--root", str(tiny_folder),
            "--out", str(out), "--format", "zarr"] + [f"--{k.replace('_', '-')}={v}" for k, v in ARGS.items()]
    procs = [subprocess.Popen(base + ["--part", f"{i}/2"], stderr=subprocess.PIPE) for i in range(2)]
    for p in procs:
        assert p.wait() == 0, p.stderr.read().decode()
    seal(out)
    assert store_files(out) == store_files(zarr_reference)
