"""Trainer library and train/classify.py on a tiny store (crop 64 -> 4x4 latents), CPU."""
import csv
import importlib.util
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from latentstore.build.run import build
from latentstore.errors import ConfigError
from latentstore.train import DISTANCES, TrainConfig, parse_config, transfer_loss
from latentstore.train import checkpoint as ckpt

from conftest import tiny_store

ROOT = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"train_{name}", ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


classify = load_script("classify")
segment = load_script("segment")


@pytest.fixture(scope="module")
def store(tiny_folder, tmp_path_factory, tiny_store_copy):
    out = tmp_path_factory.mktemp("train-store")
    tiny_store_copy(tiny_folder, out, variants=2, shard_size=2)
    return out


def args(store, out, *extra):
    return ["--store", str(store), "--out", str(out), "--model", "resnet18-aa", "--epochs", "3",
            "--batch-size", "2", "--workers", "0", "--save-every", "1", "--log-every", "1",
            "--no-progress", *extra]


def losses(out):
    with open(Path(out) / "metrics.csv") as f:
        return [(int(r["step"]), r["value"]) for r in csv.DictReader(f) if r["name"] == "loss"]


# ---------------------------------------------------------------- config

def test_unknown_flag_and_bad_values_are_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_config(TrainConfig, ["--store", "s", "--out", "o", "--lerning-rate", "0.1"])
    assert exc.value.code == 2 and "unrecognized arguments: --lerning-rate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, ["--store", "s", "--out", "o", "--transfer", "kl"])
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, ["--store", "s"])                        # --out is required
    cfg = parse_config(classify.Config, ["--store", "s", "--out", "o", "--milestones", "3,5", "--no-progress",
                                         "--label-smoothing", "0.1"])
    assert cfg.milestones == (3, 5) and cfg.progress is False and cfg.label_smoothing == 0.1
    assert (cfg.lr, cfg.momentum, cfg.epochs, cfg.batch_size) == (0.01, 0.9, 16, 256)   # paper recipe
    assert classify.recipe_milestones(16) == (12, 15)


def test_a_config_file_value_is_checked_as_its_flag_would_be(tmp_path, capsys):
    conf = tmp_path / "run.yaml"
    for text, message in (("transfer: kl\n", "transfer: 'kl' is not one of none, mse, mae, cos"),
                          ("milestones: [3, x]\n", "milestones: '3,x' is not a comma-separated list of integers"),
                          ("epochs: 1.5\n", "epochs: 1.5 is not a valid int")):
        conf.write_text(text)
        with pytest.raises(SystemExit) as exc:
            parse_config(TrainConfig, ["--config", str(conf), "--store", "s", "--out", "o"])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    conf.write_text("milestones: [3, 5]\nprogress: false\n")
    cfg = parse_config(TrainConfig, ["--config", str(conf), "--store", "s", "--out", "o"])
    assert cfg.milestones == (3, 5) and cfg.progress is False


# ---------------------------------------------------------------- transfer losses

@pytest.mark.parametrize("name", ["classify", "segment"])
def test_help_shows_only_meaningful_defaults(name, capsys):
    with pytest.raises(SystemExit) as exc:
        load_script(name).main(["--help"])
    text = " ".join(capsys.readouterr().out.split())          # undo argparse's line wrapping
    assert exc.value.code == 0 and "(default: None)" not in text and "(default: ())" not in text
    assert "--milestones MILESTONES epochs at which lr is multiplied by --gamma (default: the task's recipe)" in text
    assert "TensorBoard events (required)" in text and "(default: train)" in text


def test_transfer_loss_values_on_hand_made_maps():
    f = [torch.tensor([[[[1.0]], [[2.0]]]]), torch.zeros(1, 1, 2, 2)]     # [B=1, C=2, 1, 1], [1, 1, 2, 2]
    t = [torch.tensor([[[[3.0]], [[2.0]]]]), torch.ones(1, 1, 2, 2)]
    assert transfer_loss("mse", f, t).item() == pytest.approx((4 + 0) / 2 + 1.0)
    assert transfer_loss("mae", f, t).item() == pytest.approx((2 + 0) / 2 + 1.0)
    # cos along channels: (1,2)·(3,2) = 7, |.|=sqrt5*sqrt13; second tap: zero vector -> similarity 0
    assert transfer_loss("cos", f, t).item() == pytest.approx(1 - 7 / (5 ** 0.5 * 13 ** 0.5) + 1.0, rel=1e-6)
    same = [torch.randn(2, 3, 4, 4)]
    assert all(transfer_loss(k, same, same).item() == pytest.approx(0, abs=1e-6) for k in DISTANCES)
    with pytest.raises(ConfigError, match="choose mse, mae, cos"):
        transfer_loss("kl", f, t)


def test_transfer_refuses_a_store_without_teacher(store, tmp_path):
    with pytest.raises(ConfigError, match="needs teacher features"):
        classify.main(args(store, tmp_path / "run", "--transfer", "mse"))


@pytest.fixture(scope="module")
def seg_store(tmp_path_factory):
    from test_cityscapes import make_cityscapes, seg_config

    root = tmp_path_factory.mktemp("seg")
    build(seg_config(make_cityscapes(root / "cityscapes"), root / "cs", coder="bmshj2018-hyperprior",
                     variants=1), progress=False)
    return root / "cs"


def test_each_trainer_refuses_the_other_task_s_store_in_one_line(store, seg_store, tmp_path, capsys):
    from latentstore.train import run_script

    for script, data, other in ((classify, seg_store, "train/segment.py"), (segment, store, "train/classify.py")):
        run = tmp_path / f"run-{script.__name__}"
        model = "resnet18-aa" if script is classify else "pspnet50-aa"
        assert run_script(lambda: script.main(args(data, run, "--model", model))) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"train it with {other}" in err, err
        assert not run.exists()                               # no run folder left behind


# ---------------------------------------------------------------- logging

def test_a_run_writes_tensorboard_events_with_the_scalars_of_metrics_csv(store, tmp_path):
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb"
    classify.main(args(store, run, "--epochs", "1"))                # 3 steps, each logged
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    (events,) = run.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0}).Reload()
    names = sorted({r["name"] for r in rows})
    assert "loss" in names and sorted(acc.Tags()["scalars"]) == names
    for name in names:
        want = [(int(r["step"]), float(np.float32(r["value"]))) for r in rows if r["name"] == name]
        assert [(e.step, e.value) for e in acc.Scalars(name)] == want, name   # TensorBoard keeps float32


def test_a_run_logs_its_last_step_ends_with_a_summary_and_a_rerun_says_it_is_done(store, tmp_path, capsys):
    run = tmp_path / "short"
    argv = args(store, run, "--epochs", "1", "--log-every", "20")    # 3 steps, fewer than --log-every
    classify.main(argv)
    out = capsys.readouterr().out
    assert [s for s, _ in losses(run)] == [3]                       # the last step is logged
    assert "finished: 3 steps, 1 of 1 epochs" in out and "last step 3: loss" in out
    assert str(run / "last.pt") in out and str(run / "metrics.csv") in out
    before = (run / "last.pt").read_bytes(), (run / "metrics.csv").read_text()
    classify.main(argv)                                             # the same command again
    out = capsys.readouterr().out
    assert "has already finished (3 steps, 1 of 1 epochs): nothing to do. Raise --epochs" in out
    assert ((run / "last.pt").read_bytes(), (run / "metrics.csv").read_text()) == before
    cut = tmp_path / "cut"
    classify.main(args(store, cut, "--max-steps", "2", "--log-every", "20"))
    assert [s for s, _ in losses(cut)] == [2] and "stopped at --max-steps 2" in capsys.readouterr().out


# ---------------------------------------------------------------- resume, step for step

@pytest.mark.slow
def test_interrupted_then_resumed_equals_uninterrupted(store, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    classify.main(args(store, full))
    classify.main(args(store, cut, "--max-steps", "4"))         # stops mid-epoch 1 (3 steps per epoch)
    state = ckpt.load(cut / ckpt.LAST)
    assert (state["step"], state["epoch"], state["offset"]) == (4, 1, 2)   # offset in samples per rank
    classify.main(args(store, cut, "--workers", "2"))          # same command resumes; workers do not matter
    assert [s for s, _ in losses(full)] == list(range(1, 10))
    assert losses(cut) == losses(full)                          # same loss values, as text, step for step
    a, b = ckpt.load(full / ckpt.LAST), ckpt.load(cut / ckpt.LAST)
    assert a["step"] == b["step"] == 9 and a["epoch"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["config"]["model"] == "resnet18-aa" and a["store"]["coder"] == "bmshj2018-hyperprior"
    assert list((full).glob("events.out.tfevents.*"))


def _ddp_worker(rank, world, port, argv):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    classify.main(argv)


@pytest.mark.slow
def test_two_process_gloo_run_of_classify_finishes(store, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = args(store, tmp_path / "ddp", "--epochs", "2", "--batch-size", "2", "--workers", "1")
    mp.spawn(_ddp_worker, args=(2, port, argv), nprocs=2, join=True)
    state = ckpt.load(tmp_path / "ddp" / ckpt.LAST)
    assert (state["world"], state["per_rank_batch"], state["epoch"], state["step"]) == (2, 1, 2, 6)
    assert [s for s, _ in losses(tmp_path / "ddp")] == list(range(1, 7))


# ---------------------------------------------------------------- transfer from a store with teacher maps

@pytest.fixture(scope="module")
def teacher_store(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher-store")
    tiny_store(tiny_folder, out, shard_size=3, teacher="resnet18", teacher_weights="untrained",
               teacher_strides=(8, 16, 32))
    return out


@pytest.mark.slow
def test_transfer_reads_teacher_maps_and_checks_them_first(teacher_store, tmp_path):
    run = tmp_path / "kt"
    classify.main(args(teacher_store, run, "--transfer", "mse", "--beta", "0.5", "--teacher", "resnet18",
                       "--teacher-weights", "untrained", "--max-steps", "2", "--workers", "0"))
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["name"] == "transfer"]
    assert len(rows) == 2 and all(float(r["value"]) > 0 for r in rows)
    with pytest.raises(ConfigError, match="another teacher"):                 # fingerprint: other weights
        classify.main(args(teacher_store, tmp_path / "x", "--transfer", "mse", "--teacher", "resnet18",
                           "--teacher-weights", str(_other_weights(tmp_path))))


def test_transfer_channel_mismatch_names_channels_per_tap(teacher_store, tmp_path, capsys):
    from latentstore.train import run_script

    argv = args(teacher_store, tmp_path / "y", "--transfer", "mse", "--model", "efficientnet_b0-aa")
    assert run_script(lambda: classify.main(argv)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "crop size" not in err, err
    assert "teacher_s8: student 40 vs teacher resnet18 128" in err and "teacher_s32: student 320 vs" in err, err
    assert "resnet18-aa" in err


def _other_weights(tmp_path):
    import timm

    torch.manual_seed(123)
    path = tmp_path / "other-resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    return path


# ---------------------------------------------------------------- segmentation recipe and loss

def test_segment_recipe_and_loss_ignore_255():
    cfg = parse_config(segment.Config, ["--store", "s", "--out", "o"])
    assert (cfg.lr, cfg.epochs, cfg.model, cfg.momentum) == (1e-3, 80, "pspnet50-aa", 0.9)
    assert segment.recipe_milestones(80) == (40,)
    with pytest.raises(SystemExit):
        parse_config(segment.Config, ["--store", "s", "--out", "o", "--label-smoothing", "0.1"])  # classify only
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1] = 10.0                                       # predicts class 1 everywhere
    label = torch.tensor([[[1, 1], [255, 255]]])
    assert segment.seg_loss(logits, logits, label, 0.4).item() == pytest.approx(1.4 * 9.08e-5, rel=1e-2)
    label[0, 0, 0] = 0                                        # one wrong pixel out of two counted
    wrong = torch.nn.functional.cross_entropy(logits, label, ignore_index=255).item()
    assert wrong == pytest.approx(10.0 / 2, rel=1e-3) and segment.seg_loss(logits, logits, label, 0).item() == wrong


@pytest.mark.slow
def test_segment_trains_on_a_tiny_cityscapes_store(tmp_path):
    from test_cityscapes import make_cityscapes, seg_config

    store = tmp_path / "cs"
    build(seg_config(make_cityscapes(tmp_path / "cityscapes"), store, coder="bmshj2018-hyperprior"),
          progress=False)
    run = tmp_path / "seg"
    segment.main(args(store, run, "--model", "pspnet50-aa", "--max-steps", "2"))
    state = ckpt.load(run / ckpt.LAST)
    assert state["step"] == 2 and state["store"]["num_classes"] == 19
    assert [s for s, _ in losses(run)] == [1, 2]
