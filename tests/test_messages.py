"""Advice that works when followed: a store's build command after add-teacher, eval with the other task's script."""
import re

import pytest

from latentstore.commands.add_teacher import add_teacher
from latentstore.build.run import build
from latentstore.errors import ConfigError

from conftest import tiny_config


def _flags_to_kwargs(flags: str) -> dict:
    kwargs = {}
    for name, value in re.findall(r"--([a-z-]+) (\S+)", flags):
        key = name.replace("-", "_")
        kwargs[key] = tuple(int(v) for v in value.split(",")) if key == "teacher_strides" else \
            tuple(value.split(",")) if key == "teacher_layers" else value
    return kwargs


def test_rerunning_the_build_after_add_teacher_names_the_teacher_flags_to_add(tiny_folder, tmp_path, tiny_store_copy):
    store = tiny_store_copy(tiny_folder, tmp_path / "s")
    add_teacher(store, "resnet18", "untrained", dtype="int8", progress=False)
    with pytest.raises(ConfigError) as exc:
        build(tiny_config(tiny_folder, store), progress=False)                  # the original command
    text = str(exc.value)
    assert "teacher weights differ" not in text, text
    (line,) = [l for l in text.splitlines() if "teacher maps" in l]
    assert "add --teacher resnet18 --teacher-weights untrained" in line and "--teacher-dtype int8" in line
    with pytest.raises(ConfigError) as exc:                                      # another argument changed too
        build(tiny_config(tiny_folder, store, variants=2), progress=False)
    assert "--variants: store has 1, command has 2" in str(exc.value)
    assert "teacher weights differ" not in str(exc.value)
    added = _flags_to_kwargs(line.split("add ", 1)[1])
    build(tiny_config(tiny_folder, store, **added), progress=False)             # the advice, followed, is accepted


def test_eval_with_the_other_task_s_script_names_the_right_one(tiny_folder, tmp_path, tiny_store_copy, capsys):
    from test_eval import _load_script, make_checkpoint

    store = tiny_store_copy(tiny_folder, tmp_path / "s")
    seg = make_checkpoint(tmp_path / "seg.pt", store, model_name="pspnet50-aa", num_classes=19)
    cls = make_checkpoint(tmp_path / "cls.pt", store)
    for script, ckpt, advice in (("classify", seg, "use eval/segment.py"), ("segment", cls, "use eval/classify.py")):
        rc = _load_script(script).main(["--store", str(store), "--checkpoint", str(ckpt), "--split", "train",
                                        "--device", "cpu"])
        err = capsys.readouterr().err.strip()
        assert rc != 0 and len(err.splitlines()) == 1 and advice in err and "num_classes" not in err, err


def _record(path, **kw):
    import json

    rec = {"kind": "latentstore-eval", "task": "classification", "method": "ResNet-18-aa", "model": "resnet18-aa",
           "coder": "cheng2020-anchor", "quality": 1, "bpp": 0.2, "top1": 50.0, "top5": 80.0, **kw}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return path


def test_plot_latency_names_the_records_it_leaves_out(tmp_path, capsys):
    from test_eval import _load_script

    timed = _record(tmp_path / "a" / "eval.json", complexity={"cpu_ms": 3.0})
    untimed = _record(tmp_path / "b" / "eval.json", bpp=0.4, top1=60.0)
    rc = _load_script("plot").main([str(timed), str(untimed), "--out", str(tmp_path / "f.png"), "--latency"])
    err = capsys.readouterr().err
    assert rc == 0 and "left out of the latency panel" in err and str(untimed) in err and str(timed) not in err


def test_plot_without_matplotlib_names_the_extra(tmp_path, capsys, monkeypatch):
    import sys

    from test_eval import _load_script

    monkeypatch.setitem(sys.modules, "matplotlib", None)         # import matplotlib raises ImportError
    rc = _load_script("plot").main([str(_record(tmp_path / "a" / "eval.json")), "--out", str(tmp_path / "f.png")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "pip install 'latentstore[plot]'" in err, err


def test_zarr_info_names_fields_not_tar_members(tiny_folder, tmp_path, tiny_store_copy):
    from latentstore.commands.info import render, summarize

    tar_text = render(summarize(tiny_store_copy(tiny_folder, tmp_path / "t")))
    zarr_text = render(summarize(tiny_store_copy(tiny_folder, tmp_path / "z", format="zarr")))
    assert "    y_hat.npy " in tar_text
    section = zarr_text.split("bytes per sample, by field:")[1].split("rejects")[0]
    assert "    y_hat " in section and ".npy" not in section and ".cls" not in section, section
