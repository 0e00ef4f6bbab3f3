"""The GPU analysis path of the encoder (build --device cuda), its logic tested with the CPU standing
in for the GPU: g_a and h_a run batched elsewhere, yet every string decodes with CompressAI on the CPU
to exactly the stored ŷ, because everything the decoder recomputes stays on the CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentstore.coders.registry import LoadedCoder, get_spec, untrained_coder
from latentstore.build.encoder import Encoder, decode_y_hat
from latentstore.errors import InputError


def images(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, size // 8, size // 8, generator=g), size=(size, size), mode="bilinear",
                      align_corners=False)
    return (x + 0.1 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


def coder(name: str) -> LoadedCoder:
    spec = get_spec(name)
    return LoadedCoder(untrained_coder(spec, 1, seed=0), spec, 1, {"source": "untrained"})


@pytest.mark.parametrize("name", ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean",
                                  "cheng2020-anchor"])
def test_batched_analysis_still_decodes_to_the_stored_y_hat(name):
    c = coder(name)
    x = images(5, 128, seed=1)
    encoded = Encoder(c, analysis_device="cpu").encode(x)
    assert len(encoded) == 5 and any(np.abs(e.symbols).max() > 0 for e in encoded)
    for e in encoded:
        got = decode_y_hat(c, e)
        assert got.tobytes() == e.y_hat.tobytes()      # bit for bit, -0.0 and +0.0 apart


def test_batched_analysis_is_the_analysis_up_to_float_rounding():
    """The y behind the symbols is g_a's, batched: symbols match the per-image CPU encoder's
    except where float rounding moves a value across a rounding boundary."""
    c = coder("cheng2020-anchor")
    x = images(5, 128, seed=2)
    a = Encoder(c).encode(x)
    b = Encoder(c, analysis_device="cpu").encode(x)
    same = np.mean([np.mean(p.symbols == q.symbols) for p, q in zip(a, b)])
    assert same > 0.99


def test_cuda_analysis_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="--device cuda, but torch sees no GPU"):
        Encoder(coder("bmshj2018-hyperprior"), analysis_device="cuda")
