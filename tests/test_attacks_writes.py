"""Issue 24, the write side and the arguments: concurrent commands on one store, and arguments that must be
refused before anything is written. Each test is named after the attack it repels."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import tiny_config, tiny_store
from latentstore.build.run import build
from latentstore.errors import StoreError
from latentstore.store.format import MANIFEST
from latentstore.store.seal import seal

REPO = Path(__file__).resolve().parents[1]


def child(script: str, *args) -> subprocess.Popen:
    """A real second process running `script` (with this worktree's latentstore), talking over pipes."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def two_splits(tmp_path_factory, tiny_folder):
    """A finished WebDataset store with splits train and val (the same 6 tiny photos)."""
    root = tmp_path_factory.mktemp("twosplit-data")
    shutil.copytree(tiny_folder / "train", root / "train")
    shutil.copytree(tiny_folder / "train", root / "val")
    out = tmp_path_factory.mktemp("twosplit") / "s"
    for split in ("train", "val"):
        tiny_store(root, out, split=split, shard_size=2)
    return out


SEAL_ROUNDS = """
    import sys, time
    from pathlib import Path
    from latentstore.store.seal import seal
    store, split, signals, rounds = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    for r in range(rounds):
        while not (signals / f"go-{r}").exists():
            time.sleep(0.0002)
        seal(store, splits=[split])
        (signals / f"done-{r}-{split}").touch()
"""


def test_two_splits_sealing_at_once_keep_both_in_the_manifest(two_splits, tmp_path):
    store = shutil.copytree(two_splits, tmp_path / "s")
    signals = tmp_path / "signals"
    signals.mkdir()
    rounds = 10
    sealers = [child(SEAL_ROUNDS, store, split, signals, rounds) for split in ("train", "val")]
    lost = []
    for r in range(rounds):
        (store / MANIFEST).unlink(missing_ok=True)
        (signals / f"go-{r}").touch()
        deadline = time.monotonic() + 60
        while not all((signals / f"done-{r}-{s}").exists() for s in ("train", "val")):
            assert all(p.poll() is None for p in sealers), [p.communicate()[1][-2000:] for p in sealers]
            assert time.monotonic() < deadline, "seal hung"
            time.sleep(0.005)
        splits = sorted(json.loads((store / MANIFEST).read_text())["splits"])
        if splits != ["train", "val"]:
            lost.append((r, splits))
    for p in sealers:
        assert p.wait(30) == 0, p.communicate()[1][-2000:]
    assert not lost, f"rounds that lost a split from manifest.json: {lost}"


GROUP_WRITER = """
    import sys
    from pathlib import Path
    from latentstore.store.commit import GroupCommit, GroupLayout
    layout = GroupLayout("train", 0, 1, ("k",), 2, 1)
    with GroupCommit(Path(sys.argv[1]), "webdataset", layout) as group:
        print("open", flush=True)
        sys.stdin.readline()
        group.commit()
    print("committed", flush=True)
"""


def test_a_second_writer_of_one_group_leaves_the_first_writers_temporaries_alone(tmp_path):
    from latentstore.store.commit import GroupCommit, GroupLayout

    store = tmp_path / "dst"
    store.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = store / "train" / f".v000-000000.tar.tmp-{dead.pid}-0badc0de"
    stale.parent.mkdir()
    stale.write_bytes(b"left by a killed convert")
    first = child(GROUP_WRITER, store)
    assert first.stdout.readline().strip() == "open", first.stderr.read()
    layout = GroupLayout("train", 0, 1, ("k",), 2, 1)
    with GroupCommit(store, "webdataset", layout):  # a concurrent convert (or add-teacher) starting the group
        pass
    out, err = first.communicate("go\n", timeout=60)
    assert first.returncode == 0, err[-2000:]
    assert out.strip().endswith("committed")
    assert (store / "train" / "v000-000000.tar").is_file()
    assert not stale.exists(), "a dead process's temporary is stale and is removed"


# What a running build (build.resume.build_lock) holds on its (split, part): the flock on the part's lock
# file. Taken here without importing the build (which loads torch: seconds per child).
HOLD_PART_LOCK = """
    import fcntl, sys
    from latentstore.store.locks import part_lock_path
    path = part_lock_path(sys.argv[1], "train", int(sys.argv[2]), int(sys.argv[3]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("holding", flush=True)
        sys.stdin.readline()
"""


def test_seal_beside_a_part_rerun_refuses_to_seal_the_old_part_manifest(tiny_folder, tmp_path):
    out = tmp_path / "s"
    for i in range(2):
        build(tiny_config(tiny_folder, out, part=(i, 2), shard_size=2), progress=False)
    rerun = child(HOLD_PART_LOCK, out, 1, 2)  # part 1/2's build is running again (its lock is held)
    try:
        assert rerun.stdout.readline().strip() == "holding", rerun.stderr.read()
        with pytest.raises(StoreError, match=r"part 1/2 is being built or rewritten right now"):
            seal(out)
        assert not (out / MANIFEST).exists()
    finally:
        rerun.communicate("done\n", timeout=30)
    assert sorted(seal(out)["splits"]) == ["train"]  # once the rerun has finished, seal goes through


@pytest.mark.parametrize("where", ["equal", "inside", "around"])
def test_out_at_or_inside_root_is_refused_before_anything_is_written(tiny_folder, tmp_path, where):
    from latentstore.errors import ConfigError

    root = shutil.copytree(tiny_folder, tmp_path / "data")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    out = {"equal": root, "inside": root / "train" / "store", "around": tmp_path}[where]
    with pytest.raises(ConfigError, match="overlap") as refused:
        build(tiny_config(root, out), progress=False)
    assert "\n" not in str(refused.value)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("split", ["../escape", ".", "..", "a/b", "/abs", "parts", ""])
def test_a_split_name_that_is_not_one_plain_folder_is_refused(tiny_folder, tmp_path, split):
    from latentstore.errors import ConfigError

    with pytest.raises(ConfigError, match="Invalid --split") as refused:
        build(tiny_config(tiny_folder, tmp_path / "s", split=split), progress=False)
    assert "\n" not in str(refused.value)
    assert not any(tmp_path.iterdir()), "nothing is written beside --out or in it"


@pytest.mark.parametrize("bad", [dict(crop=0), dict(crop=-64), dict(resize=0), dict(scale=(2.0, 0.5)),
                                 dict(scale=(0.0, 1.0))])
def test_bad_crop_resize_or_scale_is_refused_in_one_line(tiny_folder, tmp_path, bad):
    from latentstore.errors import ConfigError

    with pytest.raises(ConfigError, match=f"Invalid --{next(iter(bad))}") as refused:
        build(tiny_config(tiny_folder, tmp_path / "s", **bad), progress=False)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "s").exists()


def test_out_under_a_regular_file_is_refused_in_one_line(tiny_folder, tmp_path):
    from latentstore.errors import ConfigError

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match="Cannot make --out"):
        build(tiny_config(tiny_folder, tmp_path / "file" / "s"), progress=False)


def test_a_refused_build_leaves_nothing_that_blocks_the_corrected_command(tiny_folder, tmp_path):
    from latentstore.errors import ConfigError

    out = tmp_path / "s"
    with pytest.raises(ConfigError, match="has no means"):
        build(tiny_config(tiny_folder, out, coder="bmshj2018-factorized", fields=("means",)), progress=False)
    assert not (out / "build-train.json").exists()
    manifest = build(tiny_config(tiny_folder, out, coder="bmshj2018-factorized"), progress=False)
    assert manifest["splits"]["train"]["samples"] == 6


def test_convert_again_after_add_teacher_carries_the_teacher_over(tiny_folder, tmp_path, tiny_store_copy):
    from latentstore.commands.add_teacher import add_teacher
    from latentstore.commands.convert import convert
    from latentstore.store.format import read_manifest
    from latentstore.commands.verify import verify

    src, dst = tiny_store_copy(tiny_folder, tmp_path / "src", shard_size=3), tmp_path / "zarr"
    convert(src, dst, "zarr", progress=False)
    add_teacher(src, "resnet18", "untrained", strides=(32,), dtype="int8", progress=False)
    convert(src, dst, "zarr", progress=False)  # the same command again, after the source gained a teacher
    entry = read_manifest(dst)["splits"]["train"]
    assert entry["config"]["teacher"] == "resnet18"
    assert entry["bytes_per_sample"].get("teacher_s32.npy", 0) > 0, entry["bytes_per_sample"]
    report = verify(dst)
    assert report.ok, report.problems


def test_convert_onto_a_store_built_with_another_seed_keeps_none_of_its_groups(tiny_folder, tmp_path, tiny_store_copy):
    from latentstore.commands.convert import convert
    from latentstore.store.format import read_manifest
    from latentstore.store.readers import read_samples

    src = tiny_store_copy(tiny_folder, tmp_path / "src", format="zarr", shard_size=3)
    dst = tiny_store_copy(tiny_folder, tmp_path / "dst", seed=7, shard_size=3)  # a finished store of other crops
    direct = tiny_store_copy(tiny_folder, tmp_path / "direct", shard_size=3)  # what converting src must give

    def y_hats(store):
        m = read_manifest(store)
        return {s.key: s.fields["y_hat"].tobytes() for unit in m["splits"]["train"]["shards"]
                for s in read_samples(store, m["backend"], unit)}

    convert(src, dst, "webdataset", progress=False)
    assert read_manifest(dst)["splits"]["train"]["config"]["seed"] == 0
    assert y_hats(dst) == y_hats(direct)


BUILD_IN_CHILD = """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from conftest import tiny_config
    from latentstore.build.run import build
    m = build(tiny_config(sys.argv[1], sys.argv[2], max_rejects=5), progress=False)
    for r in m["splits"]["train"]["rejects"]:
        print(r["source"], "|", r["reason"])
"""


def test_a_fifo_or_a_link_to_dev_zero_named_like_an_image_is_rejected_not_opened(tiny_folder, tmp_path):
    root = shutil.copytree(tiny_folder, tmp_path / "data")
    os.mkfifo(root / "train" / "class0" / "pipe.png")
    os.symlink("/dev/zero", root / "train" / "class1" / "zero.png")
    run = child(BUILD_IN_CHILD, root, tmp_path / "s", Path(__file__).parent)
    try:
        out, err = run.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        run.kill()
        pytest.fail("the build hung on a special file")
    assert run.returncode == 0, err[-2000:]
    rejects = dict(line.split(" | ") for line in out.strip().splitlines())
    assert sorted(rejects) == ["train/class0/pipe.png", "train/class1/zero.png"], out
    assert "a FIFO" in rejects["train/class0/pipe.png"] and "a device" in rejects["train/class1/zero.png"]


def test_a_fifo_in_a_flat_folder_is_listed_to_be_rejected_never_dropped(tmp_path):
    from latentstore.build.sources import _images_in

    os.mkfifo(tmp_path / "pipe.JPEG")
    os.symlink("/dev/zero", tmp_path / "zero.JPEG")
    (tmp_path / "folder.JPEG").mkdir()
    (tmp_path / "photo.JPEG").write_bytes(b"x")
    assert [p.name for p in _images_in(tmp_path, recursive=False)] == ["photo.JPEG", "pipe.JPEG", "zero.JPEG"]


def _rerecord(store, shard_path):
    """Write the shard's current size and digests into the manifest and its group record."""
    from latentstore.store.checksum import file_record

    fresh = file_record(store / shard_path)
    for path in [store / MANIFEST, *sorted((store / "train").glob("group-*.json"))]:
        doc = json.loads(path.read_text())
        shards = doc["splits"]["train"]["shards"] if "splits" in doc else doc["shards"]
        for entry in shards:
            if entry["path"] == shard_path:
                entry.update(fresh)
        path.write_text(json.dumps(doc))


def _pax_block(name: bytes, data: bytes) -> bytes:
    """A PAX extended header ('x') holding `data`, with a valid header checksum, padded to whole blocks."""
    header = bytearray(512)
    header[:len(name)] = name
    header[100:108] = b"0000644\0"
    header[124:136] = b"%011o\0" % len(data)
    header[136:148] = b"00000000000\0"
    header[156:157] = b"x"
    header[257:263] = b"ustar\0"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + data + bytes(-len(data) % 512)


@pytest.mark.parametrize("record", [b"zz\n", b"0 \n", b"99 path=x\n", b"6 path\n"])
def test_a_malformed_pax_header_is_a_one_line_error_naming_the_shard(tiny_folder, tmp_path, tiny_store_copy, record):
    from latentstore import open_store
    from latentstore.commands.convert import convert
    from latentstore.store.format import read_manifest
    from latentstore.commands.verify import verify

    store = tiny_store_copy(tiny_folder, tmp_path / "s", shard_size=3)
    shard = read_manifest(store)["splits"]["train"]["shards"][0]["path"]
    tar = store / shard
    tar.write_bytes(_pax_block(b"PaxHeader/x", record) + tar.read_bytes())
    _rerecord(store, shard)  # an attacker who edits the records too: only the tar's own headers tell
    report = verify(store)
    assert not report.ok and any(shard in p and "PAX" in p for p in report.problems), report.problems
    with pytest.raises(StoreError, match=f"shard {shard}") as refused:  # never an IndexError
        list(open_store(store, shuffle=False))
    assert "\n" not in str(refused.value)
    assert len(list(open_store(store, max_skips=10, shuffle=False))) < 6  # skipped, named, never a traceback
    with pytest.raises(StoreError, match=f"{shard}"):
        convert(store, tmp_path / "z", "zarr", progress=False)


def _edit_manifest(store, edit):
    manifest = json.loads((store / MANIFEST).read_text())
    edit(manifest)
    (store / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("edit, field", [
    (lambda m: m["splits"]["train"]["shards"][0].pop("bytes"), "bytes"),
    (lambda m: m["splits"]["train"].update(samples="6"), "samples"),
    (lambda m: m["splits"].update(train=None), "None"),
    (lambda m: m["splits"]["train"].update(variants=0), "variants"),
])
def test_a_hand_edited_manifest_is_a_one_line_error_in_verify_and_the_reader(two_splits, tmp_path, edit, field):
    from latentstore import open_store
    from latentstore.commands.verify import verify

    store = shutil.copytree(two_splits, tmp_path / "s")
    _edit_manifest(store, edit)
    report = verify(store)
    assert not report.ok and len(report.problems) == 1 and field in report.problems[0], report.problems
    assert "\n" not in report.problems[0]
    with pytest.raises(StoreError, match=f"edited or damaged: .*{field}"):
        open_store(store, split="train")


def test_a_reader_meeting_a_shard_being_rewritten_is_told_a_build_is_in_progress(tiny_folder, tmp_path,
                                                                                  tiny_store_copy):
    from latentstore import open_store
    from latentstore.store.format import read_manifest

    store = tiny_store_copy(tiny_folder, tmp_path / "s", shard_size=3)
    shard = read_manifest(store)["splits"]["train"]["shards"][0]["path"]
    writer = child(HOLD_PART_LOCK, store, 0, 1)  # a resumed build (or add-teacher) of the split is running
    try:
        assert writer.stdout.readline().strip() == "holding", writer.stderr.read()
        tar = store / shard
        data = bytearray(tar.read_bytes())
        data[1500] ^= 0xFF  # ... and is halfway through replacing this shard
        tar.write_bytes(bytes(data))
        with pytest.raises(StoreError, match="is writing into .* right now") as told:
            list(open_store(store, shuffle=False))
        assert "rebuild" not in str(told.value)
    finally:
        writer.communicate("done\n", timeout=30)


def test_a_grown_zarr_dataset_gets_the_same_advice_from_verify_and_build(tiny_folder, tmp_path):
    from latentstore.errors import InputError
    from latentstore.store.format import ZARR_GROWTH_ADVICE
    from latentstore.commands.verify import verify

    root = shutil.copytree(tiny_folder, tmp_path / "data")
    store = tiny_store(root, tmp_path / "s", format="zarr", shard_size=3)
    shutil.copy(root / "train" / "class0" / "img0.png", root / "train" / "class0" / "img9.png")
    problems = [p for p in verify(store).problems if "now lists 7 images" in p]
    assert len(problems) == 1 and ZARR_GROWTH_ADVICE in problems[0] and "rerun the build" not in problems[0]
    with pytest.raises(InputError, match="sized by its image count") as refused:
        build(tiny_config(root, store, format="zarr", shard_size=3), progress=False)
    assert ZARR_GROWTH_ADVICE in str(refused.value)
