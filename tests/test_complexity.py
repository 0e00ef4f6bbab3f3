"""latentstore.models.complexity and eval/complexity.py: MACs by hand on tiny nets, the table, the script."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from compressai.layers import GDN, GDN1
from torch import nn

from latentstore.models.complexity import (Latency, count_macs, count_params, markdown_table, measure,
                                    measure_latency, model_table)
from latentstore.errors import ConfigError

SCRIPT = Path(__file__).resolve().parents[1] / "eval" / "complexity.py"


def load_script():
    spec = importlib.util.spec_from_file_location("eval_complexity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_macs_by_hand():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),          # 8×4×4 out × 3·9
        nn.Conv2d(8, 8, 3, padding=1, groups=8),          # depthwise: 8×4×4 × 1·9
        nn.ConvTranspose2d(8, 4, 2, stride=2),            # 8×4×4 in × 4·4
        GDN(4),                                           # 4×8×8 out × 4
        nn.BatchNorm2d(4), nn.ReLU(), nn.PixelShuffle(2),  # not counted
        nn.Flatten(), nn.Linear(1 * 16 * 16, 10),         # 10 × 256
    )
    want = 128 * 27 + 128 * 9 + 128 * 16 + 256 * 4 + 10 * 256
    assert count_macs(net, torch.zeros(3, 3, 8, 8)) == want  # per sample, batch divided out
    assert count_params(net) == sum(p.numel() for p in net.parameters())


class Squares(nn.Module):
    """A module of no known type whose only work is element-wise."""

    def forward(self, x):
        return x * x + 1


class FunctionalConv(nn.Module):
    """A 1×1 conv through F.conv2d, with no nn.Conv2d in sight."""

    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c, c, 1, 1))

    def forward(self, x):
        return nn.functional.conv2d(x, self.weight)


def test_gdn_counts_as_its_1x1_conv_and_unknown_modules_by_their_ops():
    x = torch.ones(2, 4, 8, 8)
    for gdn in (GDN(4), GDN(4, inverse=True), GDN1(4)):            # norm = conv2d(x² or |x|, 4×4×1×1 γ)
        assert count_macs(gdn, x) == 4 * 8 * 8 * 4, gdn
    assert count_macs(Squares(), x) == 0                            # not charged as a GDN
    assert count_macs(FunctionalConv(4), x) == 4 * 8 * 8 * 4       # charged for the conv it runs
    assert count_macs(nn.Sequential(Squares(), GDN(4), Squares()), x) == 4 * 8 * 8 * 4


def test_count_macs_keeps_training_mode_and_removes_hooks():
    net = nn.Sequential(nn.Conv2d(1, 1, 1))
    net.train()
    count_macs(net, torch.zeros(1, 1, 2, 2))
    assert net.training and not net[0]._forward_hooks


def test_latency_and_table():
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    lat = measure_latency(net, torch.zeros(1, 3, 8, 8), warmup=1, runs=3)
    assert type(lat) is Latency and lat.runs == 3 and lat.median_ms > 0 and lat.device == "cpu"
    with pytest.raises(ConfigError, match="runs must be"):
        measure_latency(net, torch.zeros(1, 3, 8, 8), runs=0)
    row = measure("tiny", net, (192, 14, 14), image_size=8, runs=2, warmup=0)
    table = markdown_table([row])
    assert table.splitlines()[0] == "| model | input | params (M) | MACs (G) | CPU ms (median) |"
    assert "| tiny | 3×8×8 | 0.00 | 0.000 |" in table


def test_model_table_uses_the_coders_channel_count():
    rows = model_table(["resnet18-aa"], coder="cheng2020", quality=2, image_size=64)
    assert rows[0].input_shape == "128×4×4"
    rows = model_table(["resnet18-aa"], coder="cheng2020", quality=5, image_size=64)
    assert rows[0].input_shape == "192×4×4"
    with pytest.raises(ConfigError, match="Invalid quality 9"):
        model_table(["resnet18-aa"], coder="cheng2020", quality=9)
    with pytest.raises(ConfigError, match="Unknown model"):
        model_table(["nope"])


def test_script_prints_markdown(capsys):
    script = load_script()
    rc = script.main(["--models", "resnet18,resnet18-aa,decode+resnet18", "--coder", "cheng2020",
                      "--quality", "1", "--image-size", "64", "--runs", "1", "--warmup", "0"])
    out, err = capsys.readouterr()
    assert rc == 0 and "3/3" in err                          # a bar while the models are built and timed
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| model | input | params (M) | MACs (G) | CPU ms (median)")
    assert [line.split(" | ")[0] for line in lines[1:]] == ["| resnet18", "| resnet18-aa", "| decode+resnet18"]
    assert "| 3×64×64 |" in lines[1] and "| 128×4×4 |" in lines[2] and "| 128×4×4 |" in lines[3]
    # decode+ includes g_s: more MACs than the pixel model alone on the same image size
    assert float(lines[3].split(" | ")[3]) > float(lines[1].split(" | ")[3])


def test_script_rejects_unknown_flags_and_names(capsys):
    script = load_script()
    with pytest.raises(SystemExit) as exc:
        script.parse(["--models", "resnet18", "--bogus"])
    assert exc.value.code == 2
    assert script.main(["--models", "resnet18-zz", "--no-latency"]) == 2
    assert "Unknown model 'resnet18-zz'" in capsys.readouterr().err
