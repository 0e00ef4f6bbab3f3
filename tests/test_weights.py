"""Weights are data, never code: caches are hash-checked, reads are weights_only, offline fails fast."""
import hashlib
import os
import re
import time

import pytest
import torch

from latentstore.coders.registry import load_coder
from latentstore.errors import WeightsError
from latentstore.teacher.load import load_teacher

COMPRESSAI_FILE = "bmshj2018-hyperprior-1-7eb97409.pth.tar"  # compressai.zoo's q1 release name


class RunsCode:
    """A pickle payload that leaves a marker file when it is unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty torch hub and Hugging Face caches, and a proxy on a closed local port: no network at all."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    for name in ("HF_HUB_OFFLINE", "LATENTSTORE_OFFLINE", "TRANSFORMERS_OFFLINE", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # discard port: nothing listens, refused at once
    return tmp_path


def crafted_checkpoint(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": RunsCode(marker)}, path)
    return path


def test_a_crafted_file_in_the_weights_cache_is_refused_and_never_run(caches):
    marker = caches / "ran"
    crafted_checkpoint(caches / "torch" / "hub" / "checkpoints" / COMPRESSAI_FILE, marker)
    with pytest.raises(WeightsError) as err:
        load_coder("bmshj2018-hyperprior", 1, "pretrained")
    assert not marker.exists(), "loading the cache ran the file's code"
    assert re.search(r"not the published file .* its sha256 is .* release says 7eb97409", str(err.value))


def test_a_crafted_file_with_the_right_hash_in_its_name_still_runs_no_code(tmp_path):
    """The hash only says which file; weights_only=True is what keeps a pickle from running."""
    from latentstore.weights import load_state

    marker = tmp_path / "ran"
    path = crafted_checkpoint(tmp_path / "x.pth.tar", marker)
    named = path.rename(tmp_path / f"coder-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}.pth.tar")
    with pytest.raises(WeightsError, match="weights_only=True"):
        load_state(named, "a test")
    with pytest.raises(WeightsError):
        load_coder("bmshj2018-hyperprior", 1, str(named))
    assert not marker.exists()


@pytest.mark.parametrize("declared", [True, False])
def test_offline_missing_coder_weights_fail_within_5_s_with_the_options(caches, monkeypatch, declared):
    if declared:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsError) as err:
        load_coder("bmshj2018-hyperprior", 1, "pretrained")
    assert time.monotonic() - start < 5
    text = str(err.value)
    assert str(caches / "torch" / "hub" / "checkpoints" / COMPRESSAI_FILE) in text
    assert "HF_HUB_OFFLINE=1" in text and "--weights" in text
    assert ("HF_HUB_OFFLINE=1 is set" if declared else "127.0.0.1:9 cannot be reached") in text


@pytest.mark.parametrize("declared", [True, False])
def test_offline_missing_teacher_weights_fail_within_5_s_with_the_options(caches, monkeypatch, declared):
    if declared:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsError) as err:
        load_teacher("resnet18", "pretrained")
    assert time.monotonic() - start < 5
    text = str(err.value)
    assert str(caches / "hf" / "hub" / "models--timm--resnet18.a1_in1k") in text
    assert "HF_HUB_OFFLINE=1" in text and "--teacher-weights" in text


def fill_hf_cache(root, repo, state, tamper=None):
    """The hub cache layout: refs/main -> a snapshot whose model.safetensors links to a blob named by its sha256."""
    from safetensors.torch import save_file

    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "blobs").mkdir(parents=True)
    tmp = folder / "blobs" / "tmp"
    save_file(state, str(tmp))
    blob = tmp.rename(folder / "blobs" / hashlib.sha256(tmp.read_bytes()).hexdigest())
    if tamper is not None:  # other (valid) weights under the same blob name
        save_file(tamper, str(blob))
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    os.symlink(os.path.relpath(blob, snapshot), snapshot / "model.safetensors")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)


def resnet18_state(seed):
    import timm

    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in timm.create_model("resnet18", pretrained=False).state_dict().items()}


def test_teacher_weights_load_offline_from_a_filled_hf_cache(caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    state = resnet18_state(1)
    fill_hf_cache(caches / "hf" / "hub", "timm/resnet18.a1_in1k", state)
    teacher = load_teacher("resnet18", "pretrained", strides=(32,))
    assert teacher.weights["source"] == "pretrained" and teacher.weights["file_sha256"]
    expected = {k: v for k, v in state.items() if not k.startswith("fc.")}
    got = teacher.model.state_dict()
    assert got and all(torch.equal(got[k], expected[k]) for k in got), "the cached weights were not the ones loaded"


def test_a_tampered_hf_cache_blob_is_refused(caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fill_hf_cache(caches / "hf" / "hub", "timm/resnet18.a1_in1k", resnet18_state(1), tamper=resnet18_state(2))
    with pytest.raises(WeightsError, match="not the published file of Hugging Face repo timm/resnet18.a1_in1k"):
        load_teacher("resnet18", "pretrained", strides=(32,))
