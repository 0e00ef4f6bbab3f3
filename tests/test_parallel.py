"""Encoder processes (--encoders): the work is shared even within one item group, the processes die
with their parent, one that is killed stops the build with a clear error, and Ctrl-C stops it cleanly;
either way a rerun resumes."""
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from latentstore.build.run import BuildConfig, _pieces, build

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


def encoder_processes(pid: int) -> list[int]:
    """`pid`'s children that are encoder processes (spawned), not multiprocessing's resource tracker."""
    out = []
    for kid in children(pid):
        try:
            cmdline = (Path("/proc") / str(kid) / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            out.append(kid)
    return sorted(out)


def interruptible_command(tiny_folder: Path, out: Path) -> tuple[list, dict]:
    """A CLI build of 6 groups in two encoder processes, long enough (~20 s) to be interrupted mid-way."""
    cmd = [sys.executable, "-m", "latentstore", "build", "--coder", "cheng2020-anchor", "--quality", "1",
           "--weights", "untrained", "--dataset", "imagefolder", "--root", str(tiny_folder), "--out", str(out),
           "--variants", "6", "--crop", "256", "--shard-size", "1", "--encoders", "2", "--quiet"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return cmd, env


def records(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "train").glob("group-*.json"))


def _as_a_terminal_starts_it() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def build_under_way(tiny_folder: Path, out: Path, stderr: Path):
    """Start the interruptible build; yield (parent, its children, the encoder processes) once it has
    committed a first group. Whatever is still running afterwards is killed."""
    cmd, env = interruptible_command(tiny_folder, out)
    with open(stderr, "wb") as err:
        # Its own process group, as a terminal's job, with SIGINT at its default and not blocked, as a terminal
        # starts it: a process started with SIGINT ignored keeps it ignored (Python installs no
        # KeyboardInterrupt then), and a full parallel run's pytest worker sometimes had it so.
        parent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                  preexec_fn=_as_a_terminal_starts_it)
    kids = []
    try:
        deadline = time.monotonic() + 180
        while len(encoder_processes(parent.pid)) < 2 and parent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        encoders = encoder_processes(parent.pid)
        kids = children(parent.pid)                     # the encoders and the resource tracker
        assert len(encoders) == 2, f"the build never started its encoder processes: {stderr.read_text()}"
        while not records(out) and parent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)                             # a first group is committed: the processes encode
        assert records(out), f"no group was committed: {stderr.read_text()}"
        assert parent.poll() is None, "the build finished before it could be interrupted: make it longer"
        yield parent, kids, encoders
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for k in kids:                                  # what this test started, if it outlived the test
            if alive(k):
                os.kill(k, signal.SIGKILL)


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    """The processes among `pids` still alive after up to `seconds`."""
    end = time.monotonic() + seconds
    while any(alive(k) for k in pids) and time.monotonic() < end:
        time.sleep(0.1)
    return [k for k in pids if alive(k)]


def stopped_within(parent: subprocess.Popen, seconds: float, what: str) -> int:
    try:
        return parent.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the build still ran {seconds:.0f} s after {what}")


def rerun_finishes_and_verifies(tiny_folder: Path, out: Path) -> None:
    """The same command, rerun, resumes and finishes the store, and `latentstore verify` passes it (in this
    process: the interrupted run was the CLI's own, and two more interpreters cost ~25 s of start-up)."""
    from latentstore.commands.cli import main
    from latentstore.commands.verify import verify

    cmd, _ = interruptible_command(tiny_folder, out)
    main(cmd[3:])                                       # exits (fails the test) on an error
    report = verify(out)
    assert report.ok and report.samples == 36, report.problems


def temporaries(out: Path) -> list[str]:
    """Files a commit writes under temporary names (the store writers, format.write_json_atomic) and renames."""
    return [p.relative_to(out).as_posix() for p in out.rglob("*") if ".tmp" in p.name]


@pytest.mark.slow  # ~20 s: a CLI build spawning two encoder processes
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_encoder_processes_die_with_a_killed_parent(tiny_folder, tmp_path):
    out = tmp_path / "s"
    with build_under_way(tiny_folder, out, tmp_path / "stderr") as (parent, kids, _):
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        left = wait_gone(kids, 5)
        committed = records(out)
        time.sleep(3)
        assert not left, f"encoder processes {left} outlived their killed parent"
        assert records(out) == committed                # nothing more committed


@pytest.mark.slow  # ~45 s: an interrupted CLI build with two encoder processes, its rerun and verify
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_encoder_process_stops_the_build_with_a_clear_error(tiny_folder, tmp_path):
    """As the kernel's out-of-memory killer would: the build must not wait forever for the lost piece."""
    out, stderr = tmp_path / "s", tmp_path / "stderr"
    with build_under_way(tiny_folder, out, stderr) as (parent, kids, encoders):
        os.kill(encoders[0], signal.SIGKILL)
        code = stopped_within(parent, 30, "one of its encoder processes was killed")
        left = wait_gone(kids, 5)
    message = stderr.read_text()
    assert code == 2, message
    assert "Traceback" not in message and len(message.strip().splitlines()) == 1, message
    assert re.search(rf"Encoder process [12] of 2 \(pid {encoders[0]}\) was killed by SIGKILL", message), message
    assert "out-of-memory" in message and "Rerun the same command" in message and "--encoders" in message
    assert not left, f"processes {left} outlived the failed build"
    assert not temporaries(out)
    rerun_finishes_and_verifies(tiny_folder, out)


@pytest.mark.slow  # ~45 s: an interrupted CLI build with two encoder processes, its rerun and verify
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_a_build_with_encoder_processes_cleanly(tiny_folder, tmp_path):
    out, stderr = tmp_path / "s", tmp_path / "stderr"
    with build_under_way(tiny_folder, out, stderr) as (parent, kids, _):
        os.killpg(parent.pid, signal.SIGINT)            # as Ctrl-C in a terminal: to the whole process group
        code = stopped_within(parent, 20, "Ctrl-C")
        left = wait_gone(kids, 5)
    message = stderr.read_text()
    assert code == 130, (f"{message} (SIGINT in this test process: {signal.getsignal(signal.SIGINT)}, "
                         f"blocked: {signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])})")
    assert "Traceback" not in message and len(message.strip().splitlines()) <= 2, message
    assert "Aborted" in message
    assert not left, f"processes {left} outlived the interrupted build"
    assert not temporaries(out), temporaries(out)
    rerun_finishes_and_verifies(tiny_folder, out)
