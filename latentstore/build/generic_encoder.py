"""The generic exact path: any CompressAI CompressionModel, encoded by its own compress() and decompress().

For a coder whose entropy model latentstore does not reimplement (build/encoder.py's single pass covers the
known families), the stored values are CompressAI's by construction:

* the strings are ``model.compress(x_i)["strings"]`` at batch 1;
* ŷ is the tensor ``model.decompress(strings, shape)`` hands to ``g_s``, captured by a forward pre-hook
  (g_s itself never runs), at batch 1, on a contiguous NCHW input, at the store's thread count;
* except for the named coders whose compress() already returns that tensor as ``"y_hat"``
  (``CoderSpec.y_hat_in_compress``: the checkerboard coder and ELIC): their compress() decodes its own
  strings with decompress()'s calls on the same inputs, so the build takes its ŷ and skips decompress()
  (docs/benchmarks.md "Coders"). tests/test_generic.py shows both give the same bytes for each such coder.

The streams (ELIC: one per channel group, then z) and ``compress()``'s shape are kept together in
``y_string`` as the container of store/strings_container.py (docs/FORMAT.md "Nested strings"); ``bits`` counts
the streams alone. The symbols, μ, σ̂ and z symbols are computed inside the coder's entropy models and
never reach the caller, so this path cannot store them: ``check_fields`` refuses them by name at build
time rather than storing something that is not what the rANS coder wrote.
"""
from __future__ import annotations

import numpy as np
import torch

from ..coders.custom import check_model
from ..errors import ConfigError, InputError
from ..store import strings_container
from ..store.threads import STORE_THREADS, store_threads
from .encoder import EncodedImage, Encoder, capture_y_hat, y_hat_array
from .timing import Profiler, stage as _stage

#: Fields only the single-pass path can derive (they live inside the entropy models).
UNDERIVABLE_FIELDS = ("symbols", "means", "scales", "z_symbols")


def check_fields(coder_name: str, fields) -> None:
    """Refuse, by name, the requested fields the generic path cannot derive for `coder_name`."""
    bad = [f for f in UNDERIVABLE_FIELDS if f in set(fields)]
    if bad:
        raise ConfigError(
            f"{coder_name} is encoded through its own compress()/decompress(), which do not expose "
            f"{', '.join(bad)}: drop {'them' if len(bad) > 1 else 'it'} from --fields "
            "(ŷ, the strings and the bpp are stored exactly)")


class GenericEncoder:
    """Encodes batches image by image with the coder's own compress() and decompress().

    ``container=False`` (tests only) keeps the known families' layout instead: y_string and z_string
    raw, which must then give the single pass's bytes. ``y_hat_from_compress`` takes ŷ from compress()'s
    output and never runs decompress(): only for a coder whose compress() returns the decoder's ŷ
    (its CoderSpec.y_hat_in_compress).
    """

    def __init__(self, model: torch.nn.Module, profiler: Profiler | None = None, container: bool = True,
                 threads: int = STORE_THREADS, y_hat_from_compress: bool = False):
        check_model(model)
        self.model = model.eval()
        self.profiler, self.container, self.threads = profiler, container, threads
        self.y_hat_from_compress = y_hat_from_compress
        self.device = next(model.parameters()).device

    def encode(self, x: torch.Tensor) -> list[EncodedImage]:
        """Encode x (float32 [B, 3, H, W] in [0, 1], H and W multiples of 64), one image at a time."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.dtype != torch.float32:
            raise InputError("GenericEncoder.encode takes a float32 tensor [B, 3, H, W] in [0, 1]")
        with store_threads(self.threads), torch.no_grad():
            return [self._one(x[i:i + 1].to(self.device).contiguous()) for i in range(x.shape[0])]

    def _one(self, x: torch.Tensor) -> EncodedImage:
        with _stage(self.profiler, "compress"):
            out = self.model.compress(x)
        streams, shape = [bytes(s[0]) for s in out["strings"]], out["shape"]
        y_hat = self._y_hat(out, streams, shape)
        fields = dict(symbols=None, y_hat=y_hat, z_symbols=None, means=None, scales=None,
                      y_shape=tuple(y_hat.shape[-2:]))
        if self.container:
            return NestedEncodedImage(y_string=strings_container.pack(streams, shape), z_string=None,
                                      z_shape=None, payload=strings_container.payload_bytes(streams), **fields)
        if isinstance(shape, dict) or len(shape) != 2 or len(streams) not in (1, 2):
            raise ConfigError(f"{type(self.model).__name__}'s strings are not (y[, z]): use the container")
        z_string = streams[1] if len(streams) == 2 else None
        z_shape = tuple(int(v) for v in shape) if z_string is not None else None
        return EncodedImage(y_string=streams[0], z_string=z_string, z_shape=z_shape, **fields)

    def _y_hat(self, out: dict, streams: list, shape) -> np.ndarray:
        """ŷ as decompress() hands it to g_s: compress()'s own where it is that tensor, else decompress()'s."""
        if self.y_hat_from_compress:
            # ELIC's channel groups decode into zeros_like(y) in compress() and into a fresh contiguous
            # buffer in decompress(): the same layout (so the same kernels) because x, hence y, is contiguous.
            return y_hat_array(out["y_hat"])
        with _stage(self.profiler, "decompress"):
            return capture_y_hat(self.model, [[s] for s in streams], shape)


class NestedEncodedImage(EncodedImage):
    """An image whose streams sit in one container in y_string; bits() counts the streams alone."""

    def __init__(self, *, payload: int, **fields):
        super().__init__(**fields)
        self.payload = payload

    def bits(self) -> int:
        return 8 * self.payload


def make_encoder(coder, profiler: Profiler | None = None, analysis_device=None):
    """The encoder a build uses for `coder` (a coders.LoadedCoder): the single pass or the generic path."""
    if coder.spec.path == "single-pass":
        return Encoder(coder, profiler, analysis_device=analysis_device)
    if analysis_device is not None:
        raise ConfigError(f"--device {analysis_device}: {coder.spec.name} is encoded by its own compress() on "
                          "the CPU (the generic path); use --device cpu")
    return GenericEncoder(coder.model, profiler, y_hat_from_compress=coder.spec.y_hat_in_compress)
