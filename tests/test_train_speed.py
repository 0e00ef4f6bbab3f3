"""The trainer's speed settings, tested on the CPU: precision choice, compile, no host sync per step."""
import csv
import math
import sys

import pytest
import torch
from torch import nn

from latentstore.errors import ConfigError
from latentstore.train import parse_config
from latentstore.train.speed import (StepMeter, autocast_dtype, maybe_compile, prepare_model,
                                     uses_channels_last)

from test_train import classify, store  # noqa: F401  (the trainer script and its tiny store)


def args(store, out, *extra):
    return ["--store", str(store), "--out", str(out), "--model", "resnet18-aa", "--epochs", "2",
            "--batch-size", "2", "--workers", "0", "--no-progress", *extra]


def test_precision_picks_bf16_and_channels_last_on_cuda_only_by_default():
    assert autocast_dtype("auto", "cuda") is torch.bfloat16 and uses_channels_last("auto", "cuda")
    assert autocast_dtype("auto", "cpu") is None and not uses_channels_last("auto", "cpu")
    assert autocast_dtype("fp32", "cuda") is None and not uses_channels_last("fp32", "cuda")
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16 and not uses_channels_last("bf16", "cpu")
    with pytest.raises(ConfigError, match="choose auto, bf16, fp32"):
        autocast_dtype("fp16", "cuda")
    cfg = parse_config(classify.Config, ["--store", "s", "--out", "o", "--precision", "fp32", "--compile"])
    assert (cfg.precision, cfg.compile) == ("fp32", True)
    assert parse_config(classify.Config, ["--store", "s", "--out", "o"]).precision == "auto"


def test_prepare_model_keeps_nchw_on_cpu_and_compile_wraps():
    model = prepare_model(nn.Conv2d(3, 4, 3), "bf16", torch.device("cpu"))
    assert model.weight.is_contiguous()
    assert maybe_compile(model, False) is model
    compiled = maybe_compile(model, True)       # lazy: compiles at the first call
    assert compiled is not model and compiled.weight is model.weight


def test_step_meter_sums_on_the_device_and_reads_once():
    meter = StepMeter()
    for v in (1.0, 2.0, 6.0):
        meter.add({"loss": torch.tensor(v), "n": v})
    assert isinstance(meter.sums["loss"], torch.Tensor)
    assert meter.means() == {"loss": 3.0, "n": 3.0}
    meter.reset()
    assert meter.means() == {} and meter.steps == 0


def test_no_host_sync_on_the_step_path_except_log_steps(store, tmp_path, monkeypatch):
    """Tensor -> Python conversions (what syncs a GPU) happen only at log steps."""
    calls = {"on": False, "n": 0}
    for name in ("__float__", "item", "tolist", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            # The DataLoader draws each epoch's base seed from the CPU generator: not a device sync.
            if calls["on"] and "torch/utils/data" not in sys._getframe(1).f_code.co_filename:
                calls["n"] += 1
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    sgd_step = torch.optim.SGD.step

    def step(self, *a, **k):
        calls["on"] = True          # count from the first optimizer step on
        return sgd_step(self, *a, **k)
    monkeypatch.setattr(torch.optim.SGD, "step", step)
    classify.main(args(store, tmp_path / "quiet", "--log-every", "100", "--save-every", "100"))
    once = calls["n"]                  # 6 steps, only the run's last step logged
    calls.update(on=False, n=0)
    classify.main(args(store, tmp_path / "logged", "--log-every", "3", "--save-every", "100"))
    assert 0 < once <= 2 and calls["n"] == 2 * once     # steps 3 and 6 logged: twice the syncs, not 6x


def test_bf16_autocast_trains_on_cpu(store, tmp_path):
    classify.main(args(store, tmp_path / "bf16", "--precision", "bf16", "--log-every", "1", "--max-steps", "2"))
    with open(tmp_path / "bf16" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["name"] == "loss"]
    assert [int(r["step"]) for r in rows] == [1, 2] and all(math.isfinite(float(r["value"])) for r in rows)


def test_eval_takes_precision_and_defaults_to_auto():
    from latentstore.evaluate.options import parse_args

    assert parse_args(["--store", "s", "--checkpoint", "c"], "classification").precision == "auto"
    assert parse_args(["--store", "s", "--checkpoint", "c", "--precision", "fp32"], "segmentation").precision == "fp32"


def test_batches_travel_as_stored_in_shared_memory_and_widen_on_the_device(store):
    """The trainers' loader hands ŷ over in its stored float16 (half the bytes of float32),
    stacked by each worker straight into shared memory; model_inputs widens it exactly."""
    from torch.utils.data import DataLoader

    from latentstore.read.dataset import open_store
    from latentstore.train.model import model_inputs

    def batches(workers: int, y_hat_dtype):
        data = open_store(store, fields=("y_hat", "label"), batch_size=2, y_hat_dtype=y_hat_dtype)
        return list(DataLoader(data, batch_size=None, num_workers=workers))

    wide, narrow = batches(0, torch.float32), batches(2, None)
    assert len(wide) == len(narrow) > 1
    region = (1, 3, 0, 4)
    for a, b in zip(wide, narrow):
        assert a["y_hat"].dtype == torch.float32 and b["y_hat"].dtype == torch.float16
        assert b["y_hat"].is_shared() and b["label"].is_shared()      # no copy into shared memory after
        x, = model_inputs(b, ("y_hat",), region, "cpu")
        assert x.dtype == torch.float32 and torch.equal(x, a["y_hat"][..., 1:3, 0:4])


@pytest.mark.parametrize("max_skips, passes", [(0, 1), (1, 3)])
def test_strict_runs_read_all_epochs_in_one_loader_pass(store, tmp_path, monkeypatch, max_skips, passes):
    """Strict reads: one pass for the run, so the loader's workers read on into the next epoch
    instead of starting each epoch cold; lenient reads (epochs of unknown length) take one per epoch."""
    from latentstore.read.dataset import LatentDataset

    calls = []
    original = LatentDataset.__iter__

    def counted(self):
        calls.append((self.epoch, self.until))
        return original(self)
    monkeypatch.setattr(LatentDataset, "__iter__", counted)
    classify.main(args(store, tmp_path / "run", "--epochs", "3", "--max-skips", str(max_skips)))
    assert len(calls) == passes and calls[0] == (0, 3 if passes == 1 else 1)
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert max(int(r["step"]) for r in csv.DictReader(f)) == 3 * 3     # 3 epochs of 3 batches each
