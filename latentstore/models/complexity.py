"""Parameter, MAC and latency counts for the model zoo (docs/method.md §4's table).

MACs (multiply-accumulates, what the paper calls FLOPs) are counted per sample
(the batch dimension divided out) by ``torch.utils.flop_counter.FlopCounterMode``,
which sees every aten op a forward runs and charges 2 FLOPs per MAC for:

- convolutions (``nn.Conv*``, timm's Conv2dSame, any ``F.conv*``): out elements × (C_in/groups) × kernel volume;
- transposed convolutions: in elements × (C_out/groups) × kernel volume;
- matrix products (``nn.Linear``, ``@``): out elements × inner dimension.

CompressAI's GDN/IGDN computes its norm as ``F.conv2d(x², γ, β)`` with a
C×C×1×1 γ, so it is counted as that 1×1 conv: out elements × C. The count
follows the ops that run, not module types, so a module is charged only for
the convolutions and products it performs.

Not counted: biases, normalization, activations, pooling, PixelShuffle,
interpolation, element-wise additions and the SE gates' multiplications -
the convention of the paper's (and most papers') FLOP numbers, which these
counts reproduce (docs/models.md).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or frozen (decode+model's g_s included), shared ones once."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, *inputs, **kwargs) -> int:
    """Multiply-accumulates of one forward of ``model(*inputs, **kwargs)`` in eval mode, per sample."""
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counter:
            model(*inputs, **kwargs)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2 // inputs[0].shape[0]


@dataclass(frozen=True)
class Latency:
    """Median wall time of ``runs`` timed forwards after ``warmup`` untimed ones (batch 1)."""
    median_ms: float
    runs: int
    warmup: int
    device: str
    threads: int


@torch.no_grad()
def measure_latency(model: nn.Module, *inputs, device: str = "cpu", warmup: int = 3, runs: int = 10) -> Latency:
    """Time ``model(*inputs)`` in eval mode on ``device``.

    On CUDA each run is bracketed by ``torch.cuda.synchronize()`` so the time is
    the kernels', not the launch's. The median resists the odd slow run (GC,
    another process) better than the mean on a shared machine.
    """
    if runs < 1 or warmup < 0:
        raise ConfigError(f"runs must be ≥ 1 and warmup ≥ 0, got runs={runs} warmup={warmup}")
    model = model.to(device).eval()
    inputs = [x.to(device) for x in inputs]
    cuda = device.startswith("cuda")

    def once():
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(*inputs)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(warmup):
        once()
    times = [once() for _ in range(runs)]
    return Latency(statistics.median(times) * 1e3, runs, warmup, device, torch.get_num_threads())


def example_inputs(model: nn.Module, latent_shape: tuple, image_size: int = 224, batch: int = 1) -> list:
    """Zero inputs of the right shape: ŷ (and σ̂) of ``latent_shape`` (C, H, W), or a 3×S×S image.

    σ̂ is filled with ones (a scale), ŷ and images with zeros: the counts do not
    depend on values, latency hardly does.
    """
    names = getattr(model, "input_names", ("image",))
    if names == ("image",):
        return [torch.zeros(batch, 3, image_size, image_size)]
    c, h, w = latent_shape
    out = [torch.zeros(batch, c, h, w)]
    if "sigma_hat" in names:
        out.append(torch.ones(batch, c, h, w))
    return out


@dataclass(frozen=True)
class Complexity:
    name: str
    input_shape: str
    params: int
    macs: int
    cpu: Latency | None = None
    gpu: Latency | None = None


def measure(name: str, model: nn.Module, latent_shape: tuple, image_size: int = 224,
            latency: bool = True, runs: int = 10, warmup: int = 3) -> Complexity:
    """Params, MACs and (optionally) CPU and, where CUDA is present, GPU latency of one model."""
    inputs = example_inputs(model, latent_shape, image_size)
    shape = " + ".join("×".join(str(d) for d in x.shape[1:]) for x in inputs)
    cpu = gpu = None
    if latency:
        cpu = measure_latency(model, *inputs, device="cpu", warmup=warmup, runs=runs)
        if torch.cuda.is_available():
            gpu = measure_latency(model, *inputs, device="cuda", warmup=warmup, runs=runs)
            model.to("cpu")
    return Complexity(name, shape, count_params(model), count_macs(model, *inputs), cpu, gpu)


def markdown_table(rows: list[Complexity]) -> str:
    """The rows as a Markdown table; latency columns only where measured."""
    has_cpu = any(r.cpu for r in rows)
    has_gpu = any(r.gpu for r in rows)
    head = ["model", "input", "params (M)", "MACs (G)"]
    head += ["CPU ms (median)"] * has_cpu + ["GPU ms (median)"] * has_gpu
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.name, r.input_shape, f"{r.params / 1e6:.2f}", f"{r.macs / 1e9:.3f}"]
        if has_cpu:
            cells.append(f"{r.cpu.median_ms:.1f}" if r.cpu else "-")
        if has_gpu:
            cells.append(f"{r.gpu.median_ms:.2f}" if r.gpu else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_table(names, coder: str = "cheng2020", quality: int = 3, image_size: int = 224,
                coder_weights: str = "untrained", num_classes: int | None = None,
                latency: bool = False, runs: int = 10, warmup: int = 3, progress: bool = False) -> list[Complexity]:
    """Build each named model for the coder/quality's latent (C from latentstore.coders.registry) and measure it.

    The latent is C × image_size/16 × image_size/16; pixel models get the image.
    g_s weights do not change counts or latency, so decode+<model> defaults to
    the seeded untrained coder, which needs no download. `progress`: a bar per model on stderr.
    """
    from tqdm import tqdm

    from ..coders.registry import check_quality, get_spec, load_coder
    from . import create_model, resolve

    spec = get_spec(coder)
    check_quality(spec, quality)
    if image_size % 16:
        raise ConfigError(f"--image-size {image_size} is not a multiple of 16 (the latent stride)")
    latent = (spec.channels[quality], image_size // 16, image_size // 16)
    loaded = None
    rows = []
    for name in names:
        resolve(name)  # fail on a bad name before building anything
    bar = tqdm(names, unit="model", disable=not progress, dynamic_ncols=True)
    for name in bar:
        bar.set_description(name)
        entry, _ = resolve(name)
        kwargs = {}
        if name.startswith("decode+"):
            loaded = loaded or load_coder(spec.name, quality, coder_weights)
            kwargs["coder"] = loaded.model
        classes = num_classes or (19 if entry.task == "segmentation" else 1000)
        model = create_model(name, latent[0], classes, **kwargs)
        rows.append(measure(name, model, latent, image_size, latency=latency, runs=runs, warmup=warmup))
    return rows
