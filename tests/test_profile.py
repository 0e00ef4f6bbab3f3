"""The stage profiler, and `latentstore build --profile` end to end."""
import torch

from latentstore.commands.cli import main
from latentstore.coders.registry import load_coder
from latentstore.build.encoder import Encoder
from latentstore.build.timing import Profiler, stage


def test_stages_sum_time_and_calls_and_merge_from_other_processes():
    prof = Profiler()
    for _ in range(3):
        with prof.stage("g_a"):
            pass
    prof.merge({"read/decode": [0.5, 2]}, where="workers")
    assert prof.totals["g_a"][1] == 3 and prof.totals["g_a"][0] >= 0
    assert prof.totals["read/decode"] == [0.5, 2] and prof.where["read/decode"] == "workers"
    text = prof.render(total=1.0)
    # Report order follows the pipeline, not the order stages were seen.
    assert text.index("read/decode") < text.index("g_a") and "build wall time 1.00 s" in text


def test_disabled_profiler_records_nothing():
    prof = Profiler(enabled=False)
    with prof.stage("g_a"), stage(None, "hyper"):
        pass
    assert prof.totals == {} and prof.snapshot() == {}
    assert prof.stage("a") is prof.stage("b")  # one shared no-op context, no allocation


def test_encoder_reports_its_stages_and_output_is_unchanged():
    coder = load_coder("cheng2020", 1, "untrained")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    prof = Profiler()
    timed = Encoder(coder, prof).encode(x)
    plain = Encoder(coder).encode(x)
    assert [e.y_string for e in timed] == [e.y_string for e in plain]
    assert set(prof.totals) == {"g_a", "hyper", "autoregressive loop", "rANS"}


def test_build_profile_prints_every_stage(tiny_folder, tmp_path, capsys):
    args = ["build", "--coder", "cheng2020", "--quality", "1", "--weights", "untrained", "--dataset",
            "imagefolder", "--root", str(tiny_folder), "--crop", "64", "--shard-size", "3", "--quiet", "--profile"]
    main(args + ["--out", str(tmp_path / "s"), "--workers", "1"])
    out = capsys.readouterr().out
    table = out.split("Time per stage (--profile):")[1]
    for name in ("read/decode", "augment", "g_a", "hyper", "autoregressive loop", "rANS", "serialize", "write"):
        assert name in table
    assert "workers" in table  # decode time measured in the worker processes came back
    main(args + ["--out", str(tmp_path / "t"), "--encoders", "2"])
    assert "encoders" in capsys.readouterr().out.split("Time per stage (--profile):")[1]
