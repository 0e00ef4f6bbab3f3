"""The generic exact path: any CompressAI CompressionModel, encoded by its own compress() and decompress().

For a coder whose entropy model latentstore does not reimplement (encode.py's single pass covers the six
known families), the stored values are CompressAI's by construction:

* the strings are ``model.compress(x_i)["strings"]`` at batch 1;
* ŷ is the tensor ``model.decompress(strings, shape)`` hands to ``g_s``, captured by a forward pre-hook
  (g_s itself never runs), at batch 1, on a contiguous NCHW input, at the store's thread count.

A coder with exactly the two streams (y, z) of the known families keeps them as ``y_string`` and
``z_string`` (a factorized one just ``y_string``); any other list of streams (ELIC: one per channel group
plus z) is kept whole in ``y_string`` as the container of strings_container.py (docs/FORMAT.md
"Nested strings"), with ``compress()``'s shape. The symbols, μ, σ̂ and z symbols are computed inside the
coder's entropy models and never reach the caller, so this path cannot store them: ``check_fields``
refuses them by name at build time rather than storing something that is not what the rANS coder wrote.
"""
from __future__ import annotations

import numpy as np
import torch

from . import strings_container
from .encode import EncodedImage
from .errors import ConfigError, InputError
from .threads import STORE_THREADS, store_threads

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


class _Captured(Exception):
    """Raised from the g_s hook once ŷ is in hand: the pixels are not needed."""


class GenericEncoder:
    """Encodes batches image by image with the coder's own compress() and decompress()."""

    def __init__(self, model: torch.nn.Module, threads: int = STORE_THREADS):
        if not hasattr(model, "g_s"):
            raise ConfigError(f"{type(model).__name__} has no g_s: the generic path captures ŷ as g_s's input")
        self.model = model.eval()
        self.threads = threads
        self.device = next(model.parameters()).device

    def encode(self, x: torch.Tensor) -> list[EncodedImage]:
        """Encode x (float32 [B, 3, H, W] in [0, 1], H and W multiples of 64), one image at a time."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.dtype != torch.float32:
            raise InputError("GenericEncoder.encode takes a float32 tensor [B, 3, H, W] in [0, 1]")
        with store_threads(self.threads), torch.no_grad():
            return [self._one(x[i:i + 1].to(self.device).contiguous()) for i in range(x.shape[0])]

    def _one(self, x: torch.Tensor) -> EncodedImage:
        out = self.model.compress(x)
        streams = [bytes(s[0]) for s in out["strings"]]
        shape = out["shape"]
        y_hat = capture_y_hat(self.model, [[s] for s in streams], shape)
        y_shape = tuple(y_hat.shape[-2:])
        if _is_plain(shape) and len(streams) in (1, 2):
            # The known families' layout: (y[, z]) with compress()'s shape = z's (or y's) height, width.
            z_string = streams[1] if len(streams) == 2 else None
            z_shape = tuple(int(v) for v in shape) if z_string is not None else None
            return EncodedImage(symbols=None, y_hat=y_hat, y_string=streams[0], z_string=z_string,
                                z_symbols=None, means=None, scales=None, y_shape=y_shape, z_shape=z_shape)
        return NestedEncodedImage(symbols=None, y_hat=y_hat, y_string=strings_container.pack(streams, shape),
                                  z_string=None, z_symbols=None, means=None, scales=None, y_shape=y_shape,
                                  z_shape=None, payload=strings_container.payload_bytes(streams))


class NestedEncodedImage(EncodedImage):
    """An image whose streams sit in one container in y_string; bits() counts the streams alone."""

    def __init__(self, *, payload: int, **fields):
        super().__init__(**fields)
        self.payload = payload

    def bits(self) -> int:
        return 8 * self.payload


def capture_y_hat(model, strings, shape) -> np.ndarray:
    """The tensor ``model.decompress(strings, shape)`` hands to g_s, as float32 [M, Hy, Wy] (batch 1)."""
    captured = []

    def grab(module, args):
        captured.append(args[0].detach().cpu().clone())
        raise _Captured

    handle = model.g_s.register_forward_pre_hook(grab)
    try:
        model.decompress(strings, shape)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"{type(model).__name__}.decompress never called g_s")
    return np.ascontiguousarray(captured[0][0].numpy(), dtype=np.float32)


def _is_plain(shape) -> bool:
    """compress()'s shape of the known families: one (height, width)."""
    return not isinstance(shape, dict) and len(shape) == 2 and all(isinstance(v, int) for v in shape)
