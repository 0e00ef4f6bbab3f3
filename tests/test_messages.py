"""Advice that works when followed: a store's build command after add-teacher, eval with the other task's script."""
import re

import pytest

from latentstore.add_teacher import add_teacher
from latentstore.build import build
from latentstore.errors import ConfigError

from conftest import tiny_config, tiny_store


def _flags_to_kwargs(flags: str) -> dict:
    kwargs = {}
    for name, value in re.findall(r"--([a-z-]+) (\S+)", flags):
        key = name.replace("-", "_")
        kwargs[key] = tuple(int(v) for v in value.split(",")) if key == "teacher_strides" else \
            tuple(value.split(",")) if key == "teacher_layers" else value
    return kwargs


def test_rerunning_the_build_after_add_teacher_names_the_teacher_flags_to_add(tiny_folder, tmp_path):
    store = tiny_store(tiny_folder, tmp_path / "s")
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


def test_eval_with_the_other_task_s_script_names_the_right_one(tiny_folder, tmp_path, capsys):
    from test_eval import _load_script, make_checkpoint

    store = tiny_store(tiny_folder, tmp_path / "s")
    seg = make_checkpoint(tmp_path / "seg.pt", store, model_name="pspnet50-aa", num_classes=19)
    cls = make_checkpoint(tmp_path / "cls.pt", store)
    for script, ckpt, advice in (("classify", seg, "use eval/segment.py"), ("segment", cls, "use eval/classify.py")):
        rc = _load_script(script).main(["--store", str(store), "--checkpoint", str(ckpt), "--split", "train",
                                        "--device", "cpu"])
        err = capsys.readouterr().err.strip()
        assert rc != 0 and len(err.splitlines()) == 1 and advice in err and "num_classes" not in err, err
