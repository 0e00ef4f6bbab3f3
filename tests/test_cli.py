"""The command line, called in process through its entry point."""
import json
import os

import pytest

from latentstore.commands.cli import main


def run(capsys, *args):
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_build_then_info(tiny_folder, tmp_path, capsys):
    store = tmp_path / "store"
    code, out, _ = run(capsys, "build", "--coder", "cheng2020", "--quality", "1", "--weights", "untrained",
                       "--dataset", "imagefolder", "--root", str(tiny_folder), "--variants", "2",
                       "--crop", "64", "--out", str(store), "--quiet")
    assert code == 0
    assert "UNTRAINED" in out and "6 of 6 images stored" in out
    code, out, _ = run(capsys, "info", str(store))
    assert code == 0 and "cheng2020-anchor  quality 1" in out and "y_hat.npy" in out
    code, out, _ = run(capsys, "info", str(store), "--json")
    summary = json.loads(out)
    assert summary["splits"]["train"]["samples_per_variant"] == [6, 6]
    assert summary["trained_weights"] is False
    code, out, _ = run(capsys, "info", str(store), "--keys")
    keys = out.split()
    assert code == 0 and len(keys) == len(set(keys)) == 12
    assert all(k.endswith("_v000") for k in keys[:6]) and all(k.endswith("_v001") for k in keys[6:])
    from latentstore import open_store
    assert open_store(store)[keys[7]]["__key__"] == keys[7]
    code, out, err = run(capsys, "seal", str(store))                      # sealing again: same manifest
    assert code == 0 and "seal train" in err and "1/1" in err and "6 of 6 images stored" in out
    code, out, err = run(capsys, "verify", str(store))
    assert code == 0 and "verify train" in err


@pytest.mark.parametrize("args,message", [
    (["--coder", "cheng2020", "--quality", "9"], "Invalid quality 9 for cheng2020-anchor: choose 1-6"),
    (["--coder", "jpeg", "--quality", "1"], "Unknown coder 'jpeg'"),
    (["--coder", "cheng2020", "--quality", "1", "--fields", "sigma"], "Unknown --fields sigma"),
    (["--coder", "cheng2020", "--quality", "1", "--encoders", "many"], "'many' is neither a number nor 'auto'"),
])
def test_user_errors_are_one_clear_line(tiny_folder, tmp_path, capsys, args, message):
    code, _, err = run(capsys, "build", *args, "--weights", "untrained", "--dataset", "imagefolder",
                       "--root", str(tiny_folder), "--out", str(tmp_path / "s"), "--quiet")
    assert code == 2 and message in err and "Traceback" not in err


def test_encoders_auto_is_the_cpus_this_job_may_use():
    from latentstore.build.config import encoder_count
    assert encoder_count("auto") == len(os.sched_getaffinity(0)) and encoder_count("3") == 3


def test_info_on_an_unfinished_store_says_what_to_do(tmp_path, capsys):
    code, _, err = run(capsys, "info", str(tmp_path))
    assert code == 2 and "Rerun the build command" in err


def test_help_explains_the_commands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "build" in out and "info" in out and "fetch-weights" in out
    code, out, _ = run(capsys, "build", "--help")
    text = " ".join(out.split())  # undo click's line wrapping
    assert "--variants" in text and "epoch e of training reads variant e mod K" in text


def test_build_options_are_buildconfig_fields_with_their_help_and_defaults(capsys):
    from latentstore.build.config import BuildConfig
    from latentstore.flags import options

    code, out, _ = run(capsys, "build", "--help")
    text = "".join(out.split())  # undo click's line wrapping (it may break a line where no space was)
    for option in options(BuildConfig):
        shown = option.shown_default()
        said = option.help_text() + (f" [default: {shown}]" if shown is not None else "")
        assert code == 0 and option.flag in text and "".join(said.split()) in text, option.flag
    assert "[default:8,16,32]" in text and "[default:cpu]" in text  # two defaults, as the dataclass holds them


def test_models_lists_names_and_counts(capsys):
    code, out, _ = run(capsys, "models", "--names-only")
    assert code == 0 and "resnet50-aa" in out and "{timm}-aa" in out
    from latentstore.models import resolve
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert {"resnet18-aa", "efficientnet_b0-aa", "decode+resnet50", "pspnet50-aa"} <= set(listed)  # docs' names
    assert all(resolve(name) and "{" not in name for name in listed)                          # all concrete
    for example in ("resnet101-aa", "regnety_016-aa"):                                          # the hint's
        resolve(example)
    code, out, err = run(capsys, "models", "resnet50-aa", "--quality", "5")
    assert code == 0 and "| resnet50-aa | 192×14×14 | 27.32 | 4.318 |" in out  # docs/method.md §4: 27.3M, 4.3B
    assert "1/1" in err                                                         # a bar on stderr
    code, out, err = run(capsys, "models", "resnet18-aa", "--quiet")
    assert code == 0 and "| resnet18-aa |" in out and "1/1" not in err
    code, _, err = run(capsys, "models", "resnet50-bb")
    assert code == 2 and "Unknown model 'resnet50-bb'" in err
