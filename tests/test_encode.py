"""latentstore.build.encoder against CompressAI itself, for every coder (no mocks).

The judge is CompressAI 1.2.8: strings equal ``model.compress`` run image by
image at batch 1, ``model.decompress`` at batch 1 hands ``g_s`` the stored
ŷ bit for bit, and CompressAI's own rANS decoder reads the stored symbols
back from the stored strings. Weights are seeded ``untrained_coder``s, whose
symbols are non-trivial (asserted), so none of this passes vacuously.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from compressai.ans import RansDecoder

from latentstore.coders.registry import CODERS, LoadedCoder, get_spec, load_coder, untrained_coder
from latentstore.build.encoder import EncodedImage, Encoder, decode_y_hat
from latentstore.errors import InputError

#: The coders build/encoder.py encodes itself; the others take the generic path (tests/test_generic.py).
SINGLE_PASS = sorted(name for name, spec in CODERS.items() if spec.path == "single-pass")

QUALITY = 1  # same latent channels as q2-3 for every coder; the smallest is fastest
FIELDS = ("symbols", "y_hat", "z_symbols", "means", "scales")


def smooth_images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Random but spatially smooth images in [0, 1], each with different content."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h // 8, w // 8, generator=g)
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return (x + 0.1 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1)


_CODERS: dict = {}


def coder(name: str) -> LoadedCoder:
    """One untrained coder per name for the whole session (building cheng2020 takes a while)."""
    if name not in _CODERS:
        spec = get_spec(name)
        model = untrained_coder(spec, QUALITY, seed=0)
        _CODERS[name] = LoadedCoder(model, spec, QUALITY, {"source": "untrained"})
    return _CODERS[name]


def bitwise_equal(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    # Compare the bytes: np.array_equal would call -0.0 and +0.0 equal.
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_encoding(a: EncodedImage, b: EncodedImage) -> None:
    assert a.y_string == b.y_string and a.z_string == b.z_string
    assert a.y_shape == b.y_shape and a.z_shape == b.z_shape
    for field in FIELDS:
        assert bitwise_equal(getattr(a, field), getattr(b, field)), field


def rans_decode(string: bytes, indexes: np.ndarray, entropy_model) -> np.ndarray:
    cdf = entropy_model.quantized_cdf.tolist()
    lengths = entropy_model.cdf_length.reshape(-1).int().tolist()
    offsets = entropy_model.offset.reshape(-1).int().tolist()
    values = RansDecoder().decode_with_indexes(string, indexes.reshape(-1).tolist(), cdf, lengths, offsets)
    return np.asarray(values, dtype=np.int32).reshape(indexes.shape)


def assert_symbols_are_what_rans_wrote(c: LoadedCoder, enc: EncodedImage) -> None:
    """Read the strings back with CompressAI's rANS decoder and its own build_indexes."""
    model = c.model
    if enc.z_string is None:
        channels = np.broadcast_to(np.arange(enc.symbols.shape[0], dtype=np.int32)[:, None, None],
                                   enc.symbols.shape)
        assert np.array_equal(rans_decode(enc.y_string, channels, model.entropy_bottleneck), enc.symbols)
        return
    z_channels = np.broadcast_to(np.arange(enc.z_symbols.shape[0], dtype=np.int32)[:, None, None],
                                 enc.z_symbols.shape)
    assert np.array_equal(rans_decode(enc.z_string, z_channels, model.entropy_bottleneck), enc.z_symbols)
    indexes = model.gaussian_conditional.build_indexes(torch.from_numpy(enc.scales)).numpy()
    if c.spec.latent_kind == "context":  # coded in raster order, channels innermost
        decoded = rans_decode(enc.y_string, indexes.transpose(1, 2, 0), model.gaussian_conditional)
        assert np.array_equal(decoded.transpose(2, 0, 1), enc.symbols)
    else:
        assert np.array_equal(rans_decode(enc.y_string, indexes, model.gaussian_conditional), enc.symbols)


def assert_exact(c: LoadedCoder, x: torch.Tensor, encoded: list[EncodedImage]) -> None:
    """Each image's encoding is what CompressAI writes and reads at batch 1."""
    assert len(encoded) == x.shape[0]
    m = c.spec.channels[c.quality]
    for i, enc in enumerate(encoded):
        with torch.no_grad():
            ref = c.model.compress(x[i:i + 1])
        assert enc.y_string == ref["strings"][0][0]
        if c.spec.has_hyperprior:
            assert enc.z_string == ref["strings"][1][0]
            assert enc.z_shape == tuple(ref["shape"])
        else:
            assert enc.z_string is None and enc.y_shape == tuple(ref["shape"])
        assert enc.symbols.dtype == np.int32 and enc.y_hat.dtype == np.float32
        assert enc.symbols.shape == enc.y_hat.shape == (m, x.shape[2] // 16, x.shape[3] // 16)
        assert bitwise_equal(decode_y_hat(c, enc), enc.y_hat)
        assert_symbols_are_what_rans_wrote(c, enc)
        assert enc.bits() == 8 * (len(enc.y_string) + len(enc.z_string or b""))
        # Non-trivial symbols, or the checks above prove nothing.
        assert len(np.unique(enc.symbols)) >= 8
        assert np.count_nonzero(enc.symbols) > enc.symbols.size // 4


@pytest.mark.parametrize("name", SINGLE_PASS)
def test_exact_at_every_batch_size(name):
    """B = 3 distinct images equal CompressAI; B = 1 and 2 give the same bytes per image."""
    c = coder(name)
    x = smooth_images(3, 64, 64, seed=1)
    encoder = Encoder(c)
    batch3 = encoder.encode(x)
    assert_exact(c, x, batch3)
    # B = 2 in another order, so each image sits at another batch position.
    batch2 = encoder.encode(x[[2, 0]])
    assert_same_encoding(batch2[0], batch3[2])
    assert_same_encoding(batch2[1], batch3[0])
    assert_same_encoding(encoder.encode(x[1:2])[0], batch3[1])
    # What is stored must follow the coder's kind of ŷ.
    assert (batch3[0].means is None) == (c.spec.latent_kind == "round")
    assert (batch3[0].scales is None) == (not c.spec.has_hyperprior)


def test_batch_of_17_equals_batch_1():
    """Past 16 images torch moves 1x1 convolutions to oneDNN, whose bits differ from
    batch 1; the encoder runs them per image, so the bytes must not change."""
    c = coder("cheng2020-anchor")
    x = smooth_images(17, 64, 64, seed=4)
    encoder = Encoder(c)
    batch = encoder.encode(x)
    for i in (0, 9, 16):
        assert_same_encoding(encoder.encode(x[i:i + 1])[0], batch[i])
    assert_exact(c, x[:2], batch[:2])


@pytest.mark.parametrize("name", ["mbt2018-mean", "cheng2020-anchor"])
def test_any_memory_layout_is_encoded_as_contiguous_nchw(name):
    """A channels_last batch (what permuting HWC crops gives) must not change a bit: at
    256 px z is 4x4, where a channels_last ẑ made h_s pick another kernel than decompress()."""
    c = coder(name)
    x = smooth_images(2, 256, 256, seed=6)
    channels_last = x.to(memory_format=torch.channels_last)
    assert not channels_last.is_contiguous()
    encoder = Encoder(c)
    for a, b in zip(encoder.encode(channels_last), encoder.encode(x)):
        assert_same_encoding(a, b)
    assert_exact(c, x[:1], encoder.encode(channels_last[:1]))


@pytest.mark.parametrize("name", SINGLE_PASS)
def test_exact_wide_64x128(name):
    """A non-square input (4x8 y, 1x2 z), so rows and columns cannot be swapped unnoticed."""
    c = coder(name)
    x = smooth_images(2, 64, 128, seed=2)
    assert_exact(c, x, Encoder(c).encode(x))


@pytest.mark.parametrize("name", ["cheng2020-anchor", "mbt2018-mean", "bmshj2018-factorized"])
def test_weights_from_checkpoint_file(name, tmp_path):
    """A plain torch.save(model.state_dict()) file, loaded via load_coder(weights=PATH)."""
    path = tmp_path / f"{name}.pth"
    torch.save(untrained_coder(get_spec(name), QUALITY, seed=3).state_dict(), path)
    c = load_coder(name, QUALITY, weights=str(path))
    assert c.weights["source"] == "file"
    x = smooth_images(2, 64, 64, seed=3)
    assert_exact(c, x, Encoder(c).encode(x))


def test_scale_lookup_matches_build_indexes():
    """The searchsorted replacement of GaussianConditional.build_indexes, on edge values."""
    encoder = Encoder(coder("mbt2018-mean"))
    gc = encoder.model.gaussian_conditional
    table = gc.scale_table
    scales = torch.cat([
        table, torch.nextafter(table, torch.full_like(table, -1.0)),
        torch.nextafter(table, torch.full_like(table, 1e9)),
        torch.tensor([-1.0, 0.0, 0.05, 0.11, 1e6]),
        torch.rand(10000) * 100,
    ]).reshape(1, 1, -1, 1)
    assert torch.equal(encoder._build_indexes(scales), gc.build_indexes(scales))


@pytest.mark.parametrize("shape, dtype", [
    ((1, 3, 64, 96), torch.float32),     # not a multiple of 64
    ((1, 1, 64, 64), torch.float32),     # not RGB
    ((3, 64, 64), torch.float32),        # no batch axis
    ((1, 3, 64, 64), torch.float64),
])
def test_bad_input_raises(shape, dtype):
    with pytest.raises(InputError):
        Encoder(coder("bmshj2018-factorized")).encode(torch.zeros(shape, dtype=dtype))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cheng2020-anchor", "cheng2020-attn", "mbt2018"])
def test_exact_real_photos_256(name):
    """Two demo photos at 256x256 (16x16 y), the size a 224 crop is padded to."""
    from pathlib import Path

    from PIL import Image

    import latentstore

    root = Path(latentstore.__file__).parent / "data" / "demo-imagenet" / "train"
    files = sorted(root.rglob("*.JPEG"))[:2]
    imgs = [torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((256, 256)))) for f in files]
    x = torch.stack(imgs).permute(0, 3, 1, 2).float().div(255).contiguous()
    c = coder(name)
    encoder = Encoder(c)
    encoded = encoder.encode(x)
    assert_exact(c, x, encoded)
    assert_same_encoding(encoder.encode(x[1:2])[0], encoded[1])


@pytest.mark.slow
def test_exact_more_channels():
    """cheng2020-anchor q4 (M = 192) from a checkpoint file, B = 4 against B = 1."""
    spec = get_spec("cheng2020-anchor")
    model = untrained_coder(spec, 4, seed=5)
    c = LoadedCoder(model, spec, 4, {"source": "untrained"})
    x = smooth_images(4, 128, 128, seed=5)
    encoder = Encoder(c)
    encoded = encoder.encode(x)
    assert_exact(c, x, encoded)
    for i in range(4):
        assert_same_encoding(encoder.encode(x[i:i + 1])[0], encoded[i])
