"""The generic exact path (build/generic_encoder.py): compress()'s strings and decompress()'s g_s input, any coder.

For the six known families it must give the single-pass path's bytes exactly; for coders latentstore
does not reimplement (ELIC, the checkerboard coder) it is checked against CompressAI with a reference
that shares no code with it: its own compress()/decompress() calls, its own hook, its own reader of the
strings container (struct and json, as docs/FORMAT.md "Nested strings" describes it).
"""
import json
import struct

import numpy as np
import pytest
import torch
from compressai.models import Cheng2020AnchorCheckerboard, Elic2022Official
from PIL import Image

from conftest import demo_photos
from test_exact import compress_and_decompress, g_s_input
from user_coder import TwoHalvesHyperprior
from latentstore.coders.registry import CODERS, load_coder
from latentstore.build.encoder import Encoder, to_input
from latentstore.errors import ConfigError
from latentstore.build.generic_encoder import GenericEncoder, check_fields, make_encoder
from latentstore.build.timing import Profiler


def crops(n=2, size=64):
    return [np.asarray(Image.open(p).convert("RGB").resize((size, size))) for p in demo_photos()[:n]]


@pytest.mark.parametrize("name", sorted(n for n, spec in CODERS.items() if spec.path == "single-pass"))
def test_generic_path_gives_the_single_pass_bytes(name):
    coder = load_coder(name, 1, "untrained")
    x, _ = to_input(crops())
    single = Encoder(coder).encode(x)
    generic = GenericEncoder(coder.model, container=False).encode(x)
    for a, b in zip(single, generic, strict=True):
        assert len(np.unique(a.symbols)) > 3, "trivial symbols would prove nothing"
        assert a.y_string == b.y_string and a.z_string == b.z_string
        assert a.y_hat.dtype == b.y_hat.dtype == np.float32
        assert a.y_hat.tobytes() == b.y_hat.tobytes()
        assert (a.y_shape, a.z_shape, a.bits()) == (b.y_shape, b.z_shape, b.bits())


def seeded(model_class, **kwargs):
    """A seeded untrained coder with spread-out y (the last analysis conv scaled), tables built."""
    torch.manual_seed(0)
    model = model_class(**kwargs)
    with torch.no_grad():
        last = [m for m in model.g_a.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.weight.mul_(32.0)
        last.bias.mul_(32.0)
    model.update(force=True)
    return model.eval()


def read_container(blob: bytes):
    """docs/FORMAT.md "Nested strings", read with struct and json alone."""
    assert blob[:4] == b"LSS1"
    (hlen,) = struct.unpack_from("<I", blob, 4)
    shape = json.loads(blob[8:8 + hlen])["shape"]
    pos = 8 + hlen
    (count,) = struct.unpack_from("<I", blob, pos)
    pos += 4
    streams = []
    for _ in range(count):
        (n,) = struct.unpack_from("<I", blob, pos)
        streams.append(blob[pos + 4:pos + 4 + n])
        pos += 4 + n
    assert pos == len(blob)
    return streams, shape


def reference(model, x):
    """(strings, shape, ŷ) from CompressAI's compress() and decompress() at batch 1, one thread."""
    out, y_hat = compress_and_decompress(model, x.contiguous())
    return [s[0] for s in out["strings"]], out["shape"], y_hat


@pytest.mark.parametrize("model_class,kwargs", [
    (Elic2022Official, {"N": 32, "M": 64, "groups": [8, 8, 16, 32]}),
    (Cheng2020AnchorCheckerboard, {"N": 32}),
])
def test_generic_path_is_compressai_for_other_coders(model_class, kwargs):
    model = seeded(model_class, **kwargs)
    x, _ = to_input(crops())
    encoded = GenericEncoder(model).encode(x)
    for i, enc in enumerate(encoded):
        strings, shape, y_hat = reference(model, x[i:i + 1])
        # ELIC: a stream per channel group and z; the checkerboard coder: two y halves and z
        stored, stored_shape = read_container(enc.y_string)
        assert stored == strings and enc.z_string is None
        assert json.dumps(stored_shape, sort_keys=True) == json.dumps(shape, sort_keys=True)
        assert enc.bits() == 8 * sum(map(len, strings))
        # What the container holds decodes, with CompressAI alone, to the stored ŷ.
        decoded = g_s_input(model, lambda: model.decompress([[b] for b in stored], stored_shape))[1]
        np.testing.assert_array_equal(enc.y_hat, decoded)
        np.testing.assert_array_equal(enc.y_hat, y_hat)
        assert enc.y_hat.tobytes() == y_hat.tobytes()
        np.testing.assert_array_equal(enc.y_hat.astype(np.float16), y_hat.astype(np.float16))
        assert len(np.unique(y_hat)) > 3, "trivial ŷ would prove nothing"


def stored_fields(enc):
    """Everything of an EncodedImage a store writes for a generic coder, as bytes and tuples."""
    return (enc.y_string, enc.z_string, enc.y_hat.dtype, enc.y_hat.shape, enc.y_hat.tobytes(), enc.y_shape,
            enc.z_shape, enc.bits(), enc.symbols, enc.means, enc.scales, enc.z_symbols)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cheng2020-checkerboard", "elic2022-chandelier", "elic2022-official"])
def test_a_build_takes_y_hat_from_compress_and_gets_decompress_s_bytes(name, checkpoint_factory):
    """The checkerboard coder and ELIC: a build runs compress() alone and stores its ŷ, which is byte for
    byte the tensor decompress() hands g_s, at the real size (224 crops padded to 256), on a checkpoint
    with non-trivial symbols. The build's encoder runs first, on the model as loaded, as in a build."""
    coder = load_coder(name, 3, str(checkpoint_factory(name, 3)))
    x, _ = to_input(crops(2, 224))
    profiler = Profiler()
    one_pass = make_encoder(coder, profiler).encode(x)
    assert profiler.totals["compress"][1] == 2 and "decompress" not in profiler.totals
    two_pass = GenericEncoder(coder.model).encode(x)
    assert x.shape[-2:] == (256, 256)
    for a, b in zip(one_pass, two_pass, strict=True):
        assert stored_fields(a) == stored_fields(b)
        assert a.y_hat.dtype == np.float32 and len(np.unique(a.y_hat)) > 3, "trivial ŷ would prove nothing"


class ClaimsAYHat(TwoHalvesHyperprior):
    """A user's coder whose compress() also returns a "y_hat" that is not the decoder's: y, unrounded."""

    def compress(self, x):
        return {**super().compress(x), "y_hat": self.g_a(x)}


def test_a_custom_coder_s_y_hat_comes_from_decompress_whatever_compress_returns():
    coder = load_coder(f"{__name__}:ClaimsAYHat", 1, "untrained")
    x, _ = to_input(crops())
    profiler = Profiler()
    encoded = make_encoder(coder, profiler).encode(x)
    assert profiler.totals["decompress"][1] == 2
    for i, enc in enumerate(encoded):
        assert enc.y_hat.tobytes() == reference(coder.model, x[i:i + 1])[2].tobytes()


def test_fields_the_generic_path_cannot_derive_are_refused_by_name():
    check_fields("elic2022-official", ["teacher"])
    with pytest.raises(ConfigError, match=r"means, scales: drop them from --fields"):
        check_fields("elic2022-official", ["scales", "means"])


def test_a_model_without_g_s_is_refused():
    with pytest.raises(ConfigError, match="must be a compressai.models.CompressionModel .* and a g_s module"):
        GenericEncoder(torch.nn.Conv2d(3, 3, 1))
