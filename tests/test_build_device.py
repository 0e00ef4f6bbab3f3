"""build --device: CUDA absent is a clear error, the device is recorded and shown, a resume on the
other device type is refused, and the dry run projects both modes (CPU stands in for the GPU)."""
import json
from dataclasses import replace

import pytest
import torch

from latentstore.build.run import build
from latentstore.build.resume import check_resume
from latentstore.build.config import device_entry
from latentstore.build.dryrun import project, render as render_projection
from latentstore.errors import ConfigError
from latentstore.commands.info import render, summarize

from conftest import tiny_config


def config(root, out, **kw):
    return tiny_config(root, out, **{"shard_size": 4, **kw})


def test_cuda_without_a_gpu_is_refused_before_anything_is_written(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--device cuda, but torch sees no GPU"):
        build(config(tiny_folder, tmp_path / "s", device="cuda"), progress=False)
    assert not (tmp_path / "s").exists()


def test_device_is_recorded_shown_and_a_resume_on_another_device_is_refused(tiny_folder, tmp_path):
    cfg = config(tiny_folder, tmp_path / "s")
    build(cfg, progress=False)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["created_by"]["device"] == "cpu" and device_entry("cpu") == {"device": "cpu"}
    summary = summarize(tmp_path / "s")
    assert "encoded   on the CPU" in render(summary)
    shown = render({**summary, "device": "cuda", "gpu": "NVIDIA H200"})
    assert "g_a/h_a on cuda (NVIDIA H200)" in shown
    resumed = replace(cfg, device="cuda").resolved()
    with pytest.raises(ConfigError, match="--device: store was started on cpu, command has cuda"):
        check_resume(tmp_path / "s", resumed, manifest["coder"]["weights"])


def test_dry_run_projects_cpu_and_cuda(tiny_folder, tmp_path):
    p = project(config(tiny_folder, tmp_path / "d", encoders=2))
    assert 0 < p["cuda_cpu_seconds_per_sample"] < p["seconds_per_sample"]
    text = render_projection(p)
    assert "with --encoders 2" in text and "with --device cuda (g_a on the GPU" in text
    assert not (tmp_path / "d").exists()


def test_batched_teacher_stores_the_fields_of_the_per_image_teacher():
    """The GPU teacher's logic with the CPU standing in: one forward for a batch, the same members,
    values within float rounding of the per-image maps."""
    import numpy as np

    from latentstore.teacher.device import BatchedTeacher
    from latentstore.teacher.load import load_teacher

    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    args = ("resnet18", "untrained", (8, 16, 32), (), "float16")
    reference = load_teacher(*args)
    batched = BatchedTeacher(load_teacher(*args), "cpu").batch_fields(crops)
    assert len(batched) == 3
    for crop, fields in zip(crops, batched):
        expected = reference.stored_fields(crop)
        assert sorted(fields) == sorted(expected) == ["teacher_s16", "teacher_s32", "teacher_s8"]
        for name in fields:
            assert fields[name].dtype == expected[name].dtype == np.float16
            a, b = fields[name].astype(np.float32), expected[name].astype(np.float32)
            assert a.shape == b.shape and np.allclose(a, b, rtol=1e-2, atol=1e-3)
