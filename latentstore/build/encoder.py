"""Exact, batch-size-independent encoding with CompressAI coders.

CompressAI is the judge: for every image, the strings equal
``model.compress(x_i)`` run at batch 1, and ``model.decompress(strings,
shape)`` at batch 1 hands ``g_s`` exactly the stored ``y_hat``.

Why the work is organised as it is (docs/FORMAT.md "What is exact", docs/benchmarks.md
"Exactness first"):

* A floating-point result depends on the kernel that computes it, and torch,
  MKL and oneDNN pick kernels by shape, memory layout, alignment and thread
  count. So every computation whose result is stored or feeds a rounding runs
  as the decoder runs it: contiguous NCHW tensors, batch 1, fresh buffers,
  STORE_THREADS threads. That covers ``g_a``, ``h_a``, ``h_s`` on the decoded
  ẑ, and in the autoregressive coders the context conv and
  ``entropy_parameters`` at every latent position.
* Elementwise work (quantization, ``ŷ = q + μ``, scale-table lookup) is
  exact whatever the batch, so it runs on the whole batch at once.
* Symbols are kept as integers and ŷ is built as ``int + μ`` (or
  ``float(int)``), as the decoder does: ``round()`` of a small negative gives
  -0.0, the decoder's ŷ has +0.0, and the stored bytes would differ.
* rANS runs once per image, with the tables read once per Encoder.

The GPU analysis (``analysis_device``, ``build --device cuda``): the decoder
never recomputes ``g_a`` or ``h_a``, it only sees their rounded outputs. So
``g_a`` and ``h_a`` may run anywhere, batched: y and z then differ from a CPU
build in the last bits (some symbols change, the store is not byte-identical
to a CPU build), but everything the decoder recomputes (ẑ, ``h_s`` at batch 1,
the context conv and ``entropy_parameters`` in the loop, rANS) still runs on
the CPU exactly as above, so every string decodes on the CPU to the stored ŷ.
TF32 is off for the analysis: y stays within float32 rounding of the CPU's.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from compressai.ans import BufferedRansEncoder

from ..coders.registry import LoadedCoder
from ..errors import InputError, WeightsError
from ..store import strings_container
from ..store.format import Padding
from ..store.threads import STORE_THREADS, no_tf32, store_threads
from .timing import Profiler, stage as _stage

# Fixed by CompressAI's autoregressive models (JointAutoregressiveHierarchicalPriors).
_CTX_KERNEL = 5
_CTX_PAD = (_CTX_KERNEL - 1) // 2


def to_input(crops: list) -> tuple[torch.Tensor, Padding]:
    """Stack same-size uint8 HxWx3 crops into a [B,3,H,W] float tensor, zero-padded to multiples of 64."""
    h, w = crops[0].shape[:2]
    pad = Padding.centered(h, w)
    # contiguous(): the permuted view is channels_last, which changes the coder's kernels.
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
    return F.pad(x, (pad.left, pad.right, pad.top, pad.bottom)), pad


@dataclass
class EncodedImage:
    """Everything stored for one image; arrays are per image (no batch axis)."""

    symbols: np.ndarray            # int32 [M, Hy, Wy]: the integers the rANS coder wrote for y
    y_hat: np.ndarray              # float32 [M, Hy, Wy]: exactly what g_s receives in decompress()
    y_string: bytes
    z_string: bytes | None         # None for bmshj2018-factorized
    z_symbols: np.ndarray | None   # int32 [N, Hz, Wz] (None for factorized)
    means: np.ndarray | None       # float32 μ per y element (None where the coder has no μ)
    scales: np.ndarray | None      # float32 σ̂ per y element, as predicted (before the 0.11 lower bound)
    y_shape: tuple[int, int]
    z_shape: tuple[int, int] | None

    def bits(self) -> int:
        """Size of the coded image in bits (y and z strings)."""
        return 8 * (len(self.y_string) + len(self.z_string or b""))


class _Tables:
    """An entropy model's rANS tables as the lists the C++ coder takes, built once."""

    def __init__(self, entropy_model, what: str):
        if entropy_model.quantized_cdf.numel() == 0:
            raise WeightsError(
                f"The coder's {what} has no CDF tables. Call model.update(force=True) "
                "after loading weights (load_coder does this), then encode again."
            )
        self.cdf = entropy_model.quantized_cdf.tolist()
        self.cdf_lengths = entropy_model.cdf_length.reshape(-1).int().tolist()
        self.offsets = entropy_model.offset.reshape(-1).int().tolist()
        self.coder = entropy_model.entropy_coder

    def encode(self, symbols: torch.Tensor, indexes: torch.Tensor) -> bytes:
        """One image's string, exactly as ``EntropyModel.compress`` writes it."""
        return self.coder.encode_with_indexes(
            symbols.reshape(-1).int().tolist(), indexes.reshape(-1).int().tolist(),
            self.cdf, self.cdf_lengths, self.offsets)


class Encoder:
    """Encodes batches of images with one coder; see the module docstring for the rules.

    The entropy tables are read once here: call ``model.update()`` before
    building an Encoder, not after. ``profiler`` (optional) sums the time of
    g_a, hyper (h_a, bottleneck, h_s), the autoregressive loop and rANS.
    """

    def __init__(self, coder: LoadedCoder, profiler: Profiler | None = None, analysis_device=None):
        self.coder = coder
        self.profiler = profiler
        self.model = coder.model.eval()
        self.kind = coder.spec.latent_kind
        self.hyper = coder.spec.has_hyperprior
        self.device = next(self.model.parameters()).device
        # g_a and h_a batched on another device (module docstring); None: per image, here.
        self._analysis = None if analysis_device is None else _Analysis(self.model, analysis_device, self.kind)
        eb = self.model.entropy_bottleneck
        self._bottleneck = _Tables(eb, "entropy bottleneck")
        # [C, 1, 1]: EntropyBottleneck codes round(v - median) and decodes q + median.
        self._medians = eb._get_medians().detach().reshape(-1, 1, 1)
        if self.hyper:
            gc = self.model.gaussian_conditional
            self._gaussian = _Tables(gc, "Gaussian conditional")
            # build_indexes counts the table entries >= the bounded scale,
            # which is what searchsorted(side="left") on all but the last returns.
            self._scale_bounds = gc.scale_table[:-1].to(self.device).contiguous()
            self._lower_bound_scale = gc.lower_bound_scale
        if self.kind == "context":
            ctx = self.model.context_prediction
            # compress() convolves with weight*mask, decompress() with the raw
            # weight; they agree because the decoder's not-yet-decoded ŷ are 0.
            self._ctx_weight = (ctx.weight * ctx.mask).detach()
            self._ctx_bias = None if ctx.bias is None else ctx.bias.detach()

    def encode(self, x: torch.Tensor) -> list[EncodedImage]:
        """Encode x (float32 [B, 3, H, W] in [0, 1], H and W multiples of 64) image by image.

        x may come in any memory layout: it is copied to the contiguous NCHW layout
        that ``compress()`` callers and ``decompress()`` use, because a convolution
        picks its kernel by layout too (a channels_last input gives other bits).
        """
        with store_threads():
            return self._encode(x)

    @torch.no_grad()
    def _encode(self, x: torch.Tensor) -> list[EncodedImage]:
        self._check_input(x)
        prof = self.profiler
        zs = None
        if self._analysis is not None:
            with _stage(prof, "g_a"):   # g_a and h_a, batched on the analysis device
                ys, zs = self._analysis(x, self.hyper)
        else:
            x = x.to(self.device).contiguous()
            # Per image, never batched: see the module docstring.
            with _stage(prof, "g_a"):
                ys = [self.model.g_a(x[i:i + 1]) for i in range(x.shape[0])]
        if not self.hyper:
            with _stage(prof, "rANS"):
                return [self._encode_factorized(y) for y in ys]

        # The hyperprior: z is coded by the entropy bottleneck, and the decoder
        # runs h_s on the *decoded* ẑ at batch 1, so the encoder does too.
        with _stage(prof, "hyper"):
            if zs is None:
                zs = [self.model.h_a(torch.abs(y) if self.kind == "round" else y) for y in ys]
            z_syms, z_strings, params = [], [], []
            for z in zs:
                z_sym, z_hat, z_string = self._bottleneck_code(z)
                z_syms.append(z_sym)
                z_strings.append(z_string)
                params.append(self.model.h_s(z_hat))

        if self.kind == "context":
            with _stage(prof, "autoregressive loop"):
                y_hats, syms, scales, means = self._context_loop(torch.cat(ys), torch.cat(params))
        else:
            y = torch.cat(ys)
            if self.kind == "mean":
                scales, means = torch.cat(params).chunk(2, 1)
                syms = torch.round(y - means).int()
                y_hats = syms + means
            else:  # "round": ŷ = round(y), σ̂ from h_s, no μ
                scales, means = torch.cat(params), None
                syms = torch.round(y).int()
                y_hats = syms.float()
        with _stage(prof, "rANS"):
            return self._code_y(ys, zs, syms, y_hats, scales, means, z_syms, z_strings)

    def _code_y(self, ys, zs, syms, y_hats, scales, means, z_syms, z_strings) -> list[EncodedImage]:
        """The y strings (one rANS call per image) and the per-image output arrays."""
        indexes = self._build_indexes(scales)
        out = []
        for i in range(len(ys)):
            sym_i, idx_i = syms[i], indexes[i]
            if self.kind == "context":
                # BufferedRansEncoder with symbols in raster order, channels
                # innermost, as _compress_ar feeds them.
                rans = BufferedRansEncoder()
                rans.encode_with_indexes(
                    sym_i.permute(1, 2, 0).reshape(-1).int().tolist(),
                    idx_i.permute(1, 2, 0).reshape(-1).int().tolist(),
                    self._gaussian.cdf, self._gaussian.cdf_lengths, self._gaussian.offsets)
                y_string = rans.flush()
            else:
                y_string = self._gaussian.encode(sym_i, idx_i)
            out.append(EncodedImage(
                symbols=_np(sym_i, np.int32), y_hat=_np(y_hats[i], np.float32),
                y_string=y_string, z_string=z_strings[i],
                z_symbols=_np(z_syms[i][0], np.int32),
                means=None if means is None else _np(means[i], np.float32),
                scales=_np(scales[i], np.float32),
                y_shape=tuple(ys[i].shape[-2:]), z_shape=tuple(zs[i].shape[-2:]),
            ))
        return out

    def _check_input(self, x) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"Encoder.encode takes a float32 tensor [B, 3, H, W]; got {got}")
        if x.dtype != torch.float32:
            raise InputError(f"Encoder.encode takes float32 images in [0, 1]; got {x.dtype}")
        h, w = x.shape[-2:]
        if h % 64 or w % 64 or h == 0 or w == 0:
            raise InputError(
                f"Image size {h}x{w} is not a multiple of 64 (the hyper-latent stride): "
                "pad it first and record the padding (docs/method.md §2)")

    def _bottleneck_code(self, v: torch.Tensor):
        """Code one image's v with the entropy bottleneck: (symbols, decoded v̂, string)."""
        sym = torch.round(v - self._medians).int()
        string = self._bottleneck.encode(sym, _channel_indexes(sym))
        # The decoder's ẑ is a fresh contiguous tensor, and h_s runs on it.
        return sym, (sym + self._medians).contiguous(), string

    def _encode_factorized(self, y: torch.Tensor) -> EncodedImage:
        sym, y_hat, string = self._bottleneck_code(y)
        return EncodedImage(
            symbols=_np(sym[0], np.int32), y_hat=_np(y_hat[0], np.float32),
            y_string=string, z_string=None, z_symbols=None, means=None, scales=None,
            y_shape=tuple(y.shape[-2:]), z_shape=None)

    def _build_indexes(self, scales: torch.Tensor) -> torch.Tensor:
        """GaussianConditional.build_indexes, as one searchsorted (compares values only: exact)."""
        bounded = self._lower_bound_scale(scales).contiguous()
        return torch.searchsorted(self._scale_bounds, bounded, side="left").int()

    def _context_loop(self, y: torch.Tensor, params: torch.Tensor):
        """The serial raster loop of the autoregressive coders, image by image.

        y: [B, M, Hy, Wy]; params: h_s output [B, 2M, Hy, Wy], per image at batch 1.
        Returns ŷ, symbols, σ̂, μ, each [B, M, Hy, Wy].
        """
        out = [self._context_loop_one(y[i:i + 1], params[i:i + 1]) for i in range(y.shape[0])]
        return tuple(torch.cat(t) for t in zip(*out))

    def _context_loop_one(self, y: torch.Tensor, params: torch.Tensor):
        """One image's loop, call for call as ``decompress()`` runs it.

        The context conv reads a view of a fresh [1, M, Hy+4, Wy+4] buffer and
        entropy_parameters a fresh concatenation, at batch 1, exactly like the
        decoder: a batched matrix product sums in another order for some inputs
        (its rows sit at other memory alignments), so no batched shortcut can be
        proven exact by a test on sample data.
        """
        _, m, height, width = y.shape
        k, p = _CTX_KERNEL, _CTX_PAD
        # Zeros where nothing is decoded yet, exactly the tensor the decoder
        # convolves (compress() has raw y there, which the mask zeroes anyway).
        y_hat = y.new_zeros(1, m, height + 2 * p, width + 2 * p)
        syms = torch.empty((1, m, height, width), dtype=torch.int32, device=y.device)
        gaussian = y.new_empty((1, 2 * m, height, width))
        ep = self.model.entropy_parameters
        for h in range(height):
            for w in range(width):
                ctx = F.conv2d(y_hat[:, :, h:h + k, w:w + k], self._ctx_weight, bias=self._ctx_bias)
                gp = ep(torch.cat((params[:, :, h:h + 1, w:w + 1], ctx), dim=1))
                mean = gp[:, m:]  # gp is (σ̂, μ) along channels
                q = torch.round(y[:, :, h:h + 1, w:w + 1] - mean).int()
                y_hat[:, :, h + p:h + p + 1, w + p:w + p + 1] = q + mean
                syms[:, :, h:h + 1, w:w + 1] = q
                gaussian[:, :, h:h + 1, w:w + 1] = gp
        scales, means = gaussian.chunk(2, 1)
        return y_hat[:, :, p:p + height, p:p + width], syms, scales, means


class _Analysis:
    """g_a and h_a on `device`, batched, in float32 without TF32; outputs per image on the CPU.

    Copies of the two transforms live on the device; the coder itself stays on
    the CPU for everything the decoder recomputes.
    """

    def __init__(self, model, device, kind: str):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda, but torch sees no GPU here: use --device cpu, or run on a GPU node")
        self.kind = kind
        self.g_a = copy.deepcopy(model.g_a).to(self.device).eval()
        self.h_a = copy.deepcopy(model.h_a).to(self.device).eval() if hasattr(model, "h_a") else None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, hyper: bool):
        with no_tf32(self.device):
            x = x.to(self.device, non_blocking=True).contiguous()
            y = self.g_a(x)
            z = self.h_a(torch.abs(y) if self.kind == "round" else y) if hyper else None
            ys = list(y.cpu().contiguous().split(1))
            zs = list(z.cpu().contiguous().split(1)) if hyper else None
        return [t.contiguous() for t in ys], None if zs is None else [t.contiguous() for t in zs]


def _channel_indexes(sym: torch.Tensor) -> torch.Tensor:
    """The entropy bottleneck's CDF index of every element: its channel."""
    c = torch.arange(sym.shape[1], dtype=torch.int32, device=sym.device)
    return c.view(1, -1, 1, 1).expand_as(sym)


def _np(t: torch.Tensor, dtype) -> np.ndarray:
    # A compact copy: views into the batch tensors would keep the whole batch alive.
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)


class _Captured(Exception):
    """Raised from the g_s hook: ŷ is all capture_y_hat needs, so g_s never runs."""


def capture_y_hat(model, strings, shape) -> np.ndarray:
    """The tensor ``model.decompress(strings, shape)`` hands to g_s, as float32 [M, Hy, Wy] (batch 1).

    The caller sets the thread count (the store's): the decoder's convolutions give other bits at another.
    """
    captured = []

    def grab(module, args):
        captured.append(args[0].detach().cpu().clone())
        raise _Captured

    handle = model.g_s.register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            model.decompress(strings, shape)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"{type(model).__name__}.decompress never called g_s")
    return y_hat_array(captured[0])


def y_hat_array(y_hat: torch.Tensor) -> np.ndarray:
    """A batch-1 ŷ tensor [1, M, Hy, Wy] as an EncodedImage holds it: float32 [M, Hy, Wy], C-contiguous."""
    return np.ascontiguousarray(y_hat[0].detach().cpu().numpy(), dtype=np.float32)


def decode_y_hat(coder: LoadedCoder, enc: EncodedImage, threads: int = STORE_THREADS) -> np.ndarray:
    """Decode enc's strings with CompressAI's ``model.decompress`` at batch 1 and return
    the tensor ``g_s`` receives (float32 [M, Hy, Wy]): the ground truth for ``enc.y_hat``.

    ``threads``: the torch thread count the store was encoded at (its manifest's
    ``created_by.torch_threads``); the decoder's convolutions give other bits at another.
    A generic coder's y_string is the strings container (store/strings_container.py) with its shape.
    """
    if coder.spec.path == "generic":
        streams, shape = strings_container.unpack(enc.y_string)
        strings = [[s] for s in streams]
    elif enc.z_string is None:
        strings, shape = [[enc.y_string]], enc.y_shape
    else:
        strings, shape = [[enc.y_string], [enc.z_string]], enc.z_shape
    with store_threads(threads):
        return capture_y_hat(coder.model, strings, shape)
