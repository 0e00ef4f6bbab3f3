"""Trainer run control on a tiny store: --config and args.yaml, honest resume, epoch boundaries, clean stops."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from latentstore.train import checkpoint as ckpt
from latentstore.train import run_script

from test_train import ROOT, args, classify, losses


@pytest.fixture(scope="module")
def store(tiny_folder, tmp_path_factory, tiny_store_copy):
    out = tmp_path_factory.mktemp("control-store")
    tiny_store_copy(tiny_folder, out, variants=2, shard_size=2)   # 6 train images: 3 steps of 2 per epoch
    return out


# ---------------------------------------------------------------- --config and args.yaml

def test_config_file_sets_any_flag_and_flags_override_it(store, tmp_path):
    conf = tmp_path / "run.yaml"
    conf.write_text(yaml.safe_dump({"store": str(store), "out": str(tmp_path / "o"), "lr": 0.05,
                                    "batch-size": 4, "milestones": [2], "progress": False, "label_smoothing": 0.1}))
    cfg = classify.parse_config(classify.Config, ["--config", str(conf), "--lr", "0.2"])
    assert (cfg.store, cfg.lr, cfg.batch_size, cfg.milestones, cfg.progress, cfg.label_smoothing) == \
        (str(store), 0.2, 4, (2,), False, 0.1)


def test_config_file_errors_name_the_key(tmp_path, capsys):
    conf = tmp_path / "bad.yaml"
    conf.write_text("lerning_rate: 0.1\n")
    with pytest.raises(SystemExit) as exc:
        classify.parse_config(classify.Config, ["--config", str(conf), "--store", "s", "--out", "o"])
    assert exc.value.code == 2 and "unknown key 'lerning_rate'" in capsys.readouterr().err
    conf.write_text("epochs: many\n")
    with pytest.raises(SystemExit):
        classify.parse_config(classify.Config, ["--config", str(conf), "--store", "s", "--out", "o"])
    assert "epochs: 'many' is not a valid int" in capsys.readouterr().err


def test_every_run_writes_args_yaml_that_reruns_it(store, tmp_path):
    run = tmp_path / "run"
    argv = args(store, run, "--epochs", "1", "--lr", "0.03")
    classify.main(argv)
    written = yaml.safe_load((run / "args.yaml").read_text())
    cfg = classify.parse_config(classify.Config, argv)
    assert written == cfg.as_dict() and written["lr"] == 0.03 and written["label_smoothing"] == 0.0
    assert classify.parse_config(classify.Config, ["--config", str(run / "args.yaml")]) == cfg


# ---------------------------------------------------------------- resume honesty

def test_resume_refuses_changed_hyperparameters_in_one_line_naming_each(store, tmp_path, capsys):
    run = tmp_path / "r"
    classify.main(args(store, run, "--max-steps", "2"))
    before = (run / "last.pt").read_bytes()
    capsys.readouterr()
    assert run_script(lambda: classify.main(args(store, run, "--lr", "0.1", "--momentum", "0.5",
                                                 "--max-steps", "8"))) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "--lr 0.01 → 0.1" in err and "--momentum 0.9 → 0.5" in err and "--resume-with-new-hparams" in err
    assert "max-steps" not in err                              # run controls may change
    assert (run / "last.pt").read_bytes() == before


def test_resume_with_new_hparams_applies_them(store, tmp_path, capsys):
    run = tmp_path / "r"
    classify.main(args(store, run, "--max-steps", "2"))
    classify.main(args(store, run, "--lr", "0.1", "--weight-decay", "0", "--max-steps", "4",
                       "--resume-with-new-hparams"))
    assert "resuming" in capsys.readouterr().out
    state = ckpt.load(run / ckpt.LAST)
    group = state["optimizer"]["param_groups"][0]
    assert state["step"] == 4 and (group["lr"], group["weight_decay"]) == (0.1, 0)
    assert state["config"]["lr"] == 0.1 and yaml.safe_load((run / "args.yaml").read_text())["lr"] == 0.1
    assert [s for s, _ in losses(run)] == [1, 2, 3, 4]


# ---------------------------------------------------------------- epoch boundary

def test_a_run_stopped_at_an_epoch_boundary_counts_the_epoch_and_saves_it_as_its_end(store, tmp_path, capsys):
    run = tmp_path / "b"
    classify.main(args(store, run, "--epochs", "2", "--max-steps", "3"))          # exactly epoch 0
    assert "stopped at --max-steps 3 (3 steps, 1 of 2 epochs)" in capsys.readouterr().out
    state = ckpt.load(run / ckpt.LAST)
    assert (state["step"], state["epoch"], state["offset"]) == (3, 1, 0)
    assert state["scheduler"]["last_epoch"] == 1
    # an end-of-epoch checkpoint takes another batch size (a deliberate change), with no advice about ranks
    classify.main(args(store, run, "--epochs", "2", "--batch-size", "3", "--resume-with-new-hparams"))
    assert "finished: 5 steps, 2 of 2 epochs" in capsys.readouterr().out
    one = tmp_path / "one"
    classify.main(args(store, one, "--epochs", "1", "--max-steps", "3"))         # the last step of the run
    assert "finished: 3 steps, 1 of 1 epochs" in capsys.readouterr().out
    assert (ckpt.load(one / ckpt.LAST)["epoch"], ckpt.load(one / ckpt.LAST)["offset"]) == (1, 0)


def test_max_steps_one_short_of_the_boundary_stays_mid_epoch(store, tmp_path, capsys):
    run = tmp_path / "m"
    classify.main(args(store, run, "--epochs", "2", "--max-steps", "2"))
    assert "(2 steps, 0 of 2 epochs)" in capsys.readouterr().out
    state = ckpt.load(run / ckpt.LAST)
    assert (state["step"], state["epoch"], state["offset"]) == (2, 0, 4)


# ---------------------------------------------------------------- clean stops (real process, real signals)

def _steps(run: Path) -> list:
    if not (run / "metrics.csv").is_file():
        return []
    with open(run / "metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r["name"] == "loss"]


@pytest.mark.slow
def test_signals_stop_cleanly_and_metrics_hold_each_step_once(store, tmp_path):
    run = tmp_path / "sig"
    argv = [sys.executable, str(ROOT / "train" / "classify.py"), *args(store, run, "--epochs", "15",
                                                                        "--save-every", "5")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1, signal.SIGINT):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = len(_steps(run))
        deadline = time.monotonic() + 120
        while len(_steps(run)) < seen + 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        if sig == signal.SIGKILL:    # no chance to save: steps logged after last.pt are logged again on resume
            assert proc.returncode == -sig
            continue
        assert proc.returncode == 128 + sig, err
        last = err.strip().splitlines()[-1]
        assert f"stopped by {signal.Signals(sig).name} after step" in last and "Traceback" not in err, err
        assert "to resume, rerun the same command:" in last and "classify.py" in last
        state = ckpt.load(run / ckpt.LAST)
        assert state["step"] == _steps(run)[-1]                # the stop saved the step it finished
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert _steps(run) == list(range(1, 46))                  # each step once, in order


# ---------------------------------------------------------------- errors from DataLoader workers

def test_a_damaged_shard_read_by_a_worker_is_the_store_s_one_line_message(store, tmp_path, capsys):
    import shutil

    from test_integrity import flip_in_member

    damaged = tmp_path / "store"
    shutil.copytree(store, damaged)
    flip_in_member(sorted((damaged / "train").glob("*.tar"))[0], ".y_hat.npy")
    run = tmp_path / "run"
    assert run_script(lambda: classify.main(args(damaged, run, "--workers", "1"))) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Caught" not in err and "Traceback" not in err, err
    assert err.startswith("error: shard train/") and "bytes differ from the shard index's checksum" in err


# ---------------------------------------------------------------- validation and best.pt

def _val_rows(run):
    with open(Path(run) / "metrics.csv") as f:
        return [(int(r["step"]), r["epoch"], r["name"], r["value"]) for r in csv.DictReader(f)
                if r["name"].startswith("val_")]


def _same_state(a, b):
    assert a["best"] == b["best"] and a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_validation_logs_top1_and_keeps_best_pt_exact_across_resume(store, tmp_path, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    argv = ("--epochs", "3", "--val-split", "train", "--lr", "0.05")
    classify.main(args(store, full, *argv))
    assert "best.pt" in capsys.readouterr().out
    rows = _val_rows(full)
    assert [(s, e, n) for s, e, n, _ in rows] == [(s, str(e), n) for s, e in ((3, 0), (6, 1), (9, 2))
                                                  for n in ("val_top1", "val_top5")]
    top1 = [(s, float(v)) for s, _, n, v in rows if n == "val_top1"]
    best_step, best_value = max(top1, key=lambda sv: (sv[1], -sv[0]))      # the first best on a tie
    best, last = ckpt.load(full / "best.pt"), ckpt.load(full / ckpt.LAST)
    assert best["best"] == last["best"] == {"metric": "top1", "value": best_value, "step": best_step,
                                            "epoch": best_step // 3, "split": "train"}
    assert best["step"] == best_step and best["val"]["val_top1"] == best_value
    for stop in ("3", "4"):                    # at the epoch boundary (just validated) and mid-epoch
        classify.main(args(store, cut / stop, *argv, "--max-steps", stop))
        classify.main(args(store, cut / stop, *argv))
        assert _val_rows(cut / stop) == rows
        _same_state(ckpt.load(cut / stop / "best.pt"), best)
        _same_state(ckpt.load(cut / stop / ckpt.LAST), last)


def test_val_split_none_auto_and_unknown(store, tmp_path, capsys):
    for flag in ("none", "auto"):                               # the tiny store has no 'val' split
        classify.main(args(store, tmp_path / flag, "--epochs", "1", "--val-split", flag))
        assert _val_rows(tmp_path / flag) == [] and not (tmp_path / flag / "best.pt").exists()
    capsys.readouterr()
    assert run_script(lambda: classify.main(args(store, tmp_path / "x", "--val-split", "vall"))) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--val-split vall" in err and "holds splits train" in err


def test_segment_validates_miou(tmp_path):
    from test_train import segment
    from test_cityscapes import make_cityscapes, seg_config
    from latentstore.build.run import build

    build(seg_config(make_cityscapes(tmp_path / "cityscapes"), tmp_path / "cs", coder="bmshj2018-hyperprior",
                     variants=1), progress=False)
    run = tmp_path / "run"
    segment.main(["--store", str(tmp_path / "cs"), "--out", str(run), "--epochs", "1", "--batch-size", "2",
                  "--workers", "0", "--no-progress", "--val-split", "train", "--model", "pspnet50-aa"])
    names = [n for _, _, n, _ in _val_rows(run)]
    assert names == ["val_miou", "val_pixel_accuracy"]
    assert ckpt.load(run / "best.pt")["best"]["metric"] == "miou"
