"""Encoder processes (--encoders): the work is shared even within one item group, and the
processes die with their parent."""
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from latentstore.build import BuildConfig, _pieces, build

ROOT = Path(__file__).resolve().parents[1]


def test_one_group_is_cut_into_pieces_for_every_process():
    groups = [list(range(512))]                 # 512 images at --shard-size 1000: one group
    pieces = _pieces([0], groups, encoders=16)
    assert len(pieces) >= 16 and all(g == 0 for g, _ in pieces)
    assert [i for _, items in pieces for i in items] == groups[0]     # in source order, each once
    groups = [list(range(5)), list(range(5, 10)), list(range(10, 12))]
    three = _pieces([0, 2], groups, encoders=3)
    assert len(three) > 2 and [g for g, _ in three] == sorted(g for g, _ in three) and {g for g, _ in three} == {0, 2}
    assert [i for _, items in three for i in items] == [0, 1, 2, 3, 4, 10, 11]
    assert _pieces([0, 2], groups, encoders=2) == [(0, groups[0]), (2, groups[2])]   # enough groups: whole
    batched = _pieces([0], [list(range(100))], encoders=3, batch_size=8)
    assert [len(items) for _, items in batched] == [16] * 6 + [4]   # whole batches of a single process


def store_files(store: Path) -> dict:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_one_group_over_two_processes_gives_the_same_bytes(tiny_folder, tmp_path):
    one = BuildConfig(coder="bmshj2018-hyperprior", quality=1, weights="untrained", dataset="imagefolder",
                      root=str(tiny_folder), split="train", out=str(tmp_path / "a"), variants=2, crop=64)
    build(one, progress=False)
    build(replace(one, out=str(tmp_path / "b"), encoders=2, batch_size=2), progress=False)
    a = store_files(tmp_path / "a")
    assert len(a) > 3 and a == store_files(tmp_path / "b")


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow  # ~20 s: a CLI build spawning two encoder processes
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_encoder_processes_die_with_a_killed_parent(tiny_folder, tmp_path):
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "latentstore.cli", "build", "--coder", "cheng2020-anchor", "--quality", "1",
           "--weights", "untrained", "--dataset", "imagefolder", "--root", str(tiny_folder), "--out", str(out),
           "--variants", "6", "--crop", "256", "--shard-size", "1", "--encoders", "2", "--quiet"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    parent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kids = []
    try:
        deadline = time.monotonic() + 120
        while len(children(parent.pid)) < 3 and time.monotonic() < deadline:  # 2 encoders + resource tracker
            time.sleep(0.2)
        kids = children(parent.pid)
        assert len(kids) >= 3, "the build never started its encoder processes"
        while not list((out / "train").glob("group-*.json")) and time.monotonic() < deadline:
            time.sleep(0.2)                             # a first group is committed: the processes encode
        assert parent.poll() is None, "the build finished before it could be killed: make it longer"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        killed = time.monotonic()
        while any(alive(k) for k in kids) and time.monotonic() < killed + 5:
            time.sleep(0.1)
        left = [k for k in kids if alive(k)]
        records = sorted(p.name for p in (out / "train").glob("group-*.json"))
        time.sleep(3)
        assert not left, f"encoder processes {left} outlived their killed parent"
        assert sorted(p.name for p in (out / "train").glob("group-*.json")) == records  # nothing more committed
    finally:
        if parent.poll() is None:
            parent.kill()
        for k in kids:                                  # what this test started, if it outlived the test
            if alive(k):
                os.kill(k, signal.SIGKILL)
