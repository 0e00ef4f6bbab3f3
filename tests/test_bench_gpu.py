"""The device benchmark's arithmetic and report, on CPU: a crash there would cost device minutes."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_gpu  # noqa: E402


def test_pooled_rates_weigh_windows_by_their_time():
    # two windows of 4 steps x 256: 1,024 samples at 2,048/s (0.5 s, 10% wait) and at 1,024/s (1 s, 40% wait)
    rate, wait = bench_gpu._pooled([{"samples_per_s": 2048, "data_wait": 0.1},
                                    {"samples_per_s": 1024, "data_wait": 0.4}], batch=256, steps=4)
    assert rate == pytest.approx(2048 / 1.5) and wait == pytest.approx((0.05 + 0.4) / 1.5)


#: a report as bench_gpu.main() fills it, with one build row of each kind
_BUILD = dict(device="cpu", samples=12, rc=0, wall_s=20.0, wall_img_s=0.6, steady_img_s=2.0)
REPORT = {"date": "2026-11-30 06:00 UTC", "machine": "test", "smoke": False, "crop": 224, "padded": 256,
          "model": "resnet50-aa", "batch": 256, "latent": 14, "device": "cuda", "workers": 12,
          "builds": [dict(_BUILD, encoders=16, samples=192, steady_img_s=28.0),
                     dict(_BUILD, encoders=1), dict(_BUILD, device="cuda", encoders=16, rc=124, wall_img_s=None),
                     dict(_BUILD, coder="bmshj2018-hyperprior q3", encoders=16, samples=768, steady_img_s=100.0),
                     dict(_BUILD, coder="bmshj2018-hyperprior q3", device="cuda", encoders=16, samples=768,
                          steady_img_s=450.0)],
          "verify": [{"store": "cuda-e16", "decode": 16, "ok": True, "rc": 0}],
          "pure": [{"precision": "fp32", "img_s": 2400.0}, {"precision": "bf16", "img_s": 5000.0}],
          "train_build": dict(_BUILD, coder="bmshj2018-hyperprior q3"), "train_samples": 8192,
          "loader": [{"y_hat": "stored", "one_pass": True, "step_ms": 0.0, "samples_s": 9000.0, "data_wait": 0.9},
                     {"y_hat": "float32", "one_pass": False, "step_ms": 51.2, "samples_s": 4000.0, "data_wait": 0.2}],
          "trainer": [{"precision": "bf16", "rc": 0, "samples_s": 4600.0, "data_wait": 0.04, "ratio_to_pure": 0.92,
                       "inner_samples_s": 4700.0, "inner_data_wait": 0.02, "inner_ratio_to_pure": 0.94},
                      {"precision": "fp32", "rc": 1}]}


def test_the_report_puts_every_figure_side_by_side():
    lines = bench_gpu.table(REPORT).splitlines()
    rows = [line.split() for line in lines]
    assert ["cpu", "--encoders", "1"] == rows[next(i for i, l in enumerate(lines) if "cpu --encoders 1 " in l)][:3]
    assert "    cheng2020-anchor q3: cpu --encoders 16 / 1: 14.00x (target >= 12x at 16)" in lines
    assert any("cuda --encoders 16" in line and "FAILED rc 124" in line for line in lines)
    # the hyperprior pair: rows under its own heading, and its own cuda/cpu ratio (no 1-encoder run: no scaling)
    hyper = lines.index("  bmshj2018-hyperprior q3:")
    assert rows[hyper + 1][:3] == ["cpu", "--encoders", "16"] and rows[hyper + 2][:3] == ["cuda", "--encoders", "16"]
    assert "    bmshj2018-hyperprior q3: --device cuda / cpu --encoders 16: 4.50x (target >= 4x)" in lines
    assert not any("hyperprior q3: cpu --encoders" in line for line in lines)
    assert any(row[:4] == ["float32", "a", "pass", "per"] and "20.0%" in row for row in rows)
    assert ["stored", "one", "pass", "none", "9,000", "-"] in rows      # no step: no data wait to speak of
    bf16 = next(row for row in rows if row and row[0] == "bf16" and len(row) > 3)
    assert bf16[1:] == ["4,600", "4.0%", "92.0%", "4,700", "2.0%", "94.0%"]
    assert any(row[0] == "fp32" and "FAILED" in row for row in rows if row)


@pytest.mark.slow  # ~15 s: a subprocess that imports compressai and encodes one 256x256 crop
def test_the_cpu_share_stage_profiles_the_build_coder_and_reports_it(tmp_path):
    class Args:
        smoke = True
    r = {}
    bench_gpu.cpu_share(Args, r, tmp_path)
    assert r["cpu_share"]["rc"] == 0, (tmp_path / "profile_context_loop.err").read_text()[-2000:]
    text = r["cpu_share"]["text"]
    for stage in ("g_a", "hyper", "of which h_a", "autoregressive loop", "rANS", "what stays on the CPU"):
        assert stage in text, text
    # 16x16 ŷ positions at 256x256: one context conv and three 1x1 convs of entropy_parameters each
    assert "256 calls" in text and "768 calls" in text and "(256 positions" in text, text
    lines = bench_gpu.table({**REPORT, "cpu_share": r["cpu_share"]}).splitlines()
    e = lines.index("(e) what --device cuda leaves on the CPU (benchmarks/profile_context_loop.py):")
    assert lines[e + 1:] == [line and "    " + line for line in text.splitlines()]
