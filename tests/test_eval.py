"""Evaluation end to end on tiny real stores: accuracy, mIoU, the real bpp, refusals, plots."""
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from latentstore.build.run import BuildConfig, build
from latentstore.errors import StoreError
from latentstore.train.store_identity import check_compatible, store_summary
from latentstore.evaluate.options import EvalConfig, parse_args
from latentstore.evaluate.run import evaluate_classification, predict_labels
from latentstore.store.format import read_manifest
from latentstore.models import create_model
from latentstore.store.readers import Sample, iter_shard
from latentstore.evaluate.report import load_records, markdown_row, method_label, results_table
from latentstore.train import TrainConfig
from latentstore.train.checkpoint import save

ROOT = Path(__file__).resolve().parents[1]
MODEL = "resnet18-aa"  # small and fast; the path is the same for resnet50-aa


def _load_script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"eval_{name}", ROOT / "eval" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cls_store(tiny_folder, tmp_path_factory) -> Path:
    """One store, two splits: train (what the checkpoint 'trained on') and val (what is evaluated)."""
    root = tmp_path_factory.mktemp("evalroot")
    shutil.copytree(tiny_folder / "train", root / "train")
    shutil.copytree(tiny_folder / "train", root / "val")
    out = tmp_path_factory.mktemp("evalstore")
    base = BuildConfig(coder="cheng2020", quality=1, weights="untrained", dataset="imagefolder", root=str(root),
                       split="train", out=str(out), crop=64, shard_size=2)
    build(replace(base, augment="val"), progress=False)           # deterministic: the test needs no RRC
    build(replace(base, split="val", augment="val"), progress=False)
    return out


def make_checkpoint(path: Path, store: Path, model_name: str = MODEL, seed: int = 0, **summary_changes) -> Path:
    """A checkpoint in the trainers' format (latentstore.train.checkpoint) for an untrained model."""
    manifest = read_manifest(store)
    info = manifest["splits"]["train"]
    torch.manual_seed(seed)
    model = create_model(model_name, info["latent_shape"][0], len(info["classes"]))
    cfg = TrainConfig(store=str(store), out=str(path.parent), model=model_name, transfer="mse")
    save(path, {"model": model.state_dict(), "config": cfg.as_dict(),
                "store": {**store_summary(manifest, "train"), **summary_changes}, "step": 3, "epoch": 1})
    return path


@pytest.fixture(scope="module")
def cls_ckpt(cls_store, tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("run") / "last.pt", cls_store)


def reference_top1(store: Path, ckpt: Path) -> tuple:
    """Top-1 computed without latentstore.evaluate: read the val tars, crop, run the model."""
    state = torch.load(ckpt, weights_only=True)
    manifest = read_manifest(store)
    info = manifest["splits"]["val"]
    model = create_model(MODEL, info["latent_shape"][0], len(info["classes"]))
    model.load_state_dict(state["model"])
    model.eval()
    r0, r1, c0, c1 = info["valid_region"]
    correct = n = bits = pixels = 0
    for shard in info["shards"]:
        for s in map(Sample.as_item, iter_shard(store / shard["path"], shard["path"], shard["samples"])):
            with torch.no_grad():
                logits = model(torch.from_numpy(s["y_hat"].astype(np.float32))[None, :, r0:r1, c0:c1])
            correct += int(logits.argmax(1).item() == s["label"])
            n += 1
            bits += 8 * (len(s["y_string"]) + len(s.get("z_string", b"")))
            h, w = s["meta"]["image_size"]
            pixels += h * w
    return 100.0 * correct / n, n, bits, pixels


def test_classification_eval_end_to_end(cls_store, cls_ckpt, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert _load_script("classify").main(["--store", str(cls_store), "--checkpoint", str(cls_ckpt),
                                          "--out", str(out), "--device", "cpu", "--batch-size", "4"]) == 0
    rec = json.loads(out.read_text())
    manifest = read_manifest(cls_store)
    top1, n, bits, pixels = reference_top1(cls_store, cls_ckpt)
    assert rec["samples"] == n == 6
    assert rec["top1"] == pytest.approx(top1) and rec["top5"] == 100.0  # 2 classes: top-5 is every sample
    assert (rec["bits"], rec["pixels"]) == (bits, pixels)
    assert rec["bpp"] == manifest["splits"]["val"]["mean_bpp"] == bits / pixels
    assert rec["matches_manifest"] is True
    assert (rec["coder"], rec["quality"], rec["model"]) == ("cheng2020-anchor", 1, MODEL)
    assert rec["method"] == "resnet18-aa + transfer"
    assert rec["checkpoint"]["step"] == 3 and len(rec["checkpoint"]["sha256"]) == 64
    md = out.with_suffix(".md").read_text()
    assert md.startswith("| method | cheng2020-anchor q1, ") and f"| {rec['method']} | {rec['top1']:.2f}" in md
    assert rec["method"] in capsys.readouterr().out


def test_eval_shows_progress_and_ends_with_a_summary(cls_store, cls_ckpt, tmp_path, capsys):
    out = tmp_path / "e.json"
    argv = ["--store", str(cls_store), "--checkpoint", str(cls_ckpt), "--out", str(out), "--device", "cpu",
            "--batch-size", "4"]
    assert _load_script("classify").main(argv) == 0
    got = capsys.readouterr()
    rec = json.loads(out.read_text())
    assert "eval val" in got.err and "6/6" in got.err                          # the bar counts samples
    assert (f"resnet18-aa + transfer: top-1 {rec['top1']:.2f} %, top-5 100.00 %, {rec['bpp']:.4f} bpp on 6 "
            "samples (split val, variant 0,") in got.out
    assert f"wrote {out} and {out.with_suffix('.md')}" in got.out
    assert _load_script("classify").main(argv + ["--quiet"]) == 0
    assert "6/6" not in capsys.readouterr().err


def test_batch_size_and_workers_do_not_change_the_numbers(cls_store, cls_ckpt, tmp_path):
    base = EvalConfig(str(cls_store), str(cls_ckpt), out=str(tmp_path / "e.json"))
    a = evaluate_classification(replace(base, batch_size=1))
    b = evaluate_classification(replace(base, batch_size=5, workers=2))
    for k in ("correct", "bits", "pixels", "samples", "top1"):
        assert a[k] == b[k], k


def test_mismatch_is_refused_naming_the_field(cls_store):
    store = store_summary(read_manifest(cls_store), "val")
    check_compatible(store, store, "classification")
    for field, value in [("quality", 3), ("coder", "mbt2018"), ("latent_shape", [128, 14, 14]),
                         ("weights_sha256", "0" * 64), ("num_classes", 1000)]:
        with pytest.raises(StoreError, match=f"{field}: checkpoint"):
            check_compatible({**store, field: value}, store, "classification")
    with pytest.raises(StoreError, match="classes: the checkpoint was trained on other classes"):
        check_compatible({**store, "classes": ["class1", "class0"]}, store, "classification")
    # segmentation evaluates whole images: only the channel count must agree
    check_compatible({**store, "latent_shape": [128, 40, 40]}, {**store, "latent_shape": [128, 64, 128]},
                     "segmentation")
    with pytest.raises(StoreError, match=r"latent_shape\[0\] \(channels\): checkpoint \[192\]"):
        check_compatible({**store, "latent_shape": [192, 40, 40]}, store, "segmentation")


def test_script_refuses_a_checkpoint_of_another_quality(cls_store, tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "q3.pt", cls_store, quality=3, weights_sha256="f" * 64)
    rc = _load_script("classify").main(["--store", str(cls_store), "--checkpoint", str(ckpt), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "quality: checkpoint 3, store 1" in err and "weights_sha256: checkpoint" in err
    assert not (tmp_path / "eval.json").exists()


def test_unknown_flag_is_an_error():
    with pytest.raises(SystemExit) as exc:
        parse_args(["--store", "s", "--checkpoint", "c", "--bogus", "1"], "classification")
    assert exc.value.code == 2
    cfg = parse_args(["--store", "s", "--checkpoint", "runs/a/last.pt"], "segmentation")
    assert cfg.out_path() == Path("runs/a/eval.json").resolve() and cfg.batch_size == 1
    with pytest.raises(Exception):
        cfg.store = "other"  # frozen


def test_eval_flags_take_their_defaults_from_evalconfig(capsys):
    assert parse_args(["--store", "s", "--checkpoint", "c"], "classification") == EvalConfig("s", "c")
    assert EvalConfig("s", "c").device == "auto" and EvalConfig("s", "c").batch_size == 32
    assert parse_args(["--store", "s", "--checkpoint", "c", "--quiet"], "classification").progress is False
    cfg = parse_args(["--store", "s", "--checkpoint", "c", "--device", "cpu", "--no-progress", "--complexity"],
                     "segmentation")
    assert cfg == EvalConfig("s", "c", batch_size=1, device="cpu", progress=False, complexity=True)
    for wrong in (["--store", "s"], ["--store", "s", "--checkpoint", "c", "--batch-size", "0"],
                  ["--store", "s", "--checkpoint", "c", "--device", "tpu"]):
        with pytest.raises(SystemExit) as exc:
            parse_args(wrong, "classification")
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "--batch-size must be >= 1" in err and "invalid choice: 'tpu'" in err


def _eval_worker(rank, world, init_file, store, ckpt, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rec = evaluate_classification(EvalConfig(store, ckpt, batch_size=2))
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(rec))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_eval_equals_single_process(cls_store, cls_ckpt, tmp_path):
    single = evaluate_classification(EvalConfig(str(cls_store), str(cls_ckpt)))
    mp.spawn(_eval_worker, args=(2, str(tmp_path / "init"), str(cls_store), str(cls_ckpt), str(tmp_path)),
             nprocs=2, join=True)
    for rank in range(2):
        rec = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert rec["world_size"] == 2
        for k in ("correct", "bits", "pixels", "samples", "top1", "top5", "bpp"):
            assert rec[k] == single[k], (rank, k)


def test_predict_labels_upsamples_then_cuts_the_padding():
    # A 32x48 image padded to 64x64 (16 px top/bottom, 8 left/8 right): latent 4x4, valid rows 1..3, cols 0..4.
    meta = {"key": "k", "padding": {"top": 16, "bottom": 16, "left": 8, "right": 8}, "image_size": [32, 48]}
    logits = torch.zeros(3, 2, 4)        # the model saw rows 1..3 (32 px) and all 4 cols (64 px), at 1/16
    logits[1, :, :2] = 1.0               # class 1 on the left half of the region
    logits[2, :, 2:] = 1.0               # class 2 on the right half
    pred = predict_labels(logits, meta, region=(1, 3, 0, 4))
    assert pred.shape == (32, 48)
    # region col 32 (the halves' border) is image col 32 - 8 = 24
    assert (pred[:, :20] == 1).all() and (pred[:, 28:] == 2).all()


def test_plot_from_two_eval_json_files(cls_store, cls_ckpt, tmp_path):
    rec = evaluate_classification(EvalConfig(str(cls_store), str(cls_ckpt), complexity=True))
    assert rec["complexity"]["params"] > 0 and rec["complexity"]["cpu_ms"] > 0
    assert rec["complexity"]["input"] == "128×4×4"  # the valid region the model sees
    a, b = tmp_path / "a" / "eval.json", tmp_path / "b" / "eval.json"
    other = {k: v for k, v in rec.items() if k != "complexity"}  # its latency comes from the JSON below
    for path, r in ((a, rec), (b, {**other, "method": "cResNet-51", "bpp": rec["bpp"] * 2, "top1": 40.0,
                                   "quality": 2})):
        path.parent.mkdir()
        path.write_text(json.dumps(r))
    cjson = tmp_path / "complexity.json"
    assert _load_script("complexity").main(["--models", MODEL, "--quality", "1", "--image-size", "64",
                                            "--runs", "1", "--warmup", "0", "--json", str(cjson)]) == 0
    rows = json.loads(cjson.read_text())
    assert rows[0]["model"] == MODEL and rows[0]["input"] == "128×4×4" and rows[0]["cpu_ms"] > 0
    out, table = tmp_path / "fig" / "rate_accuracy.png", tmp_path / "results.md"
    rc = _load_script("plot").main([str(a), str(b), "--out", str(out), "--paper", "--latency",
                                    "--complexity", str(cjson), "--table", str(table)])
    assert rc == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    text = table.read_text()
    assert "| resnet18-aa + transfer |" in text and "| cResNet-51 | 69.12" not in text
    assert "| ResNet-50-aa + transfer | 69.26 | 72.24 | 73.75 |" in text  # --paper rows


def test_tables_and_labels():
    assert method_label("resnet50-aa", "mse") == "ResNet-50-aa + transfer"
    assert method_label("decode+resnet50") == "Decode + ResNet-50"
    assert method_label("reshape+resnet50") == "Reshape + ResNet-50"
    assert method_label("pspnet50-aa", "mae") == "PSPNet-50-aa + transfer (mae)"
    recs = [{"task": "classification", "method": m, "coder": "cheng2020-anchor", "quality": q, "bpp": bpp,
             "top1": t, "top5": 90.0} for m, q, bpp, t in
            [("A", 1, 0.16, 60.0), ("A", 3, 0.34, 70.0), ("B", 3, 0.34, 65.5)]]
    table = results_table(recs, "classification")
    assert "| method | cheng2020-anchor q1 (0.160 bpp) | cheng2020-anchor q3 (0.340 bpp) |" in table
    assert "| A | 60.00 | 70.00 |" in table and "| B | - | 65.50 |" in table
    assert markdown_row(recs[2]) == ("| method | cheng2020-anchor q3, 0.340 bpp |\n|---|---|\n"
                                     "| B | 65.50 (top-5 90.00) |")


def test_load_records_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(Exception, match="not a latentstore eval.json"):
        load_records([tmp_path / "x.json"])


@pytest.fixture(scope="module")
def seg_store(tmp_path_factory) -> Path:
    """A Cityscapes-layout val split: whole (small) images with 19-class label maps (test_cityscapes)."""
    from test_cityscapes import make_cityscapes

    root = make_cityscapes(tmp_path_factory.mktemp("cs"))
    out = tmp_path_factory.mktemp("csstore")
    build(BuildConfig(coder="cheng2020", quality=1, weights="untrained", dataset="cityscapes", root=str(root),
                      split="val", out=str(out), shard_size=1), progress=False)
    return out


@pytest.mark.slow
def test_segmentation_eval_end_to_end(seg_store, tmp_path):
    manifest = read_manifest(seg_store)
    info = manifest["splits"]["val"]
    assert info["config"]["augment"] == "seg-val"
    torch.manual_seed(0)
    model = create_model("pspnet50-aa", 128, 19)
    ckpt = tmp_path / "run" / "last.pt"
    summary = {**store_summary(manifest, "val"), "latent_shape": [128, 40, 40]}  # trained on 640 crops
    save(ckpt, {"model": model.state_dict(), "config": TrainConfig(store="s", out="o", model="pspnet50-aa").as_dict(),
                "store": summary, "step": 1, "epoch": 0})
    assert _load_script("segment").main(["--store", str(seg_store), "--checkpoint", str(ckpt),
                                         "--device", "cpu"]) == 0
    rec = json.loads((tmp_path / "run" / "eval.json").read_text())
    labels = [s.fields["label_map"] for shard in info["shards"]
              for s in iter_shard(seg_store / shard["path"], shard["path"], shard["samples"])]
    assert [128, *(n // 16 for n in labels[0].shape)] == info["latent_shape"]  # whole image, unpadded
    cm = np.array(rec["confusion_matrix"])
    assert cm.shape == (19, 19) and cm.dtype == np.int64
    assert cm.sum() == rec["labeled_pixels"] == sum(int((m != 255).sum()) for m in labels)
    assert (cm.sum(1) == np.bincount(np.concatenate([m[m != 255] for m in labels]), minlength=19)).all()
    assert rec["bpp"] == info["mean_bpp"] and rec["matches_manifest"] is True
    assert rec["classes"][:2] == ["road", "sidewalk"] and len(rec["per_class_iou"]) == 19
    ious = [v for v in rec["per_class_iou"].values() if v is not None]
    assert rec["miou"] == pytest.approx(sum(ious) / len(ious))
    md = (tmp_path / "run" / "eval.md").read_text()
    assert "| class | IoU (%) |\n|---|---|\n| road |" in md and "**mean (mIoU)**" in md
