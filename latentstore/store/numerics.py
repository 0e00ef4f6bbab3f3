"""The machine's floating-point numerics: what a store records of them, and the portable pins.

Which kernels compute a store's floats depends on the CPU: ATen's vector kernels dispatch on the
CPU's capability (AVX2, AVX-512), oneDNN's JIT convolutions on its ISA, MKL's GEMM and vector math on
its code branch. Each choice changes float32 last bits of μ and σ, hence ŷ. Two modes:

- ``portable`` (the default): every process that computes a stored value runs with the dispatch
  pinned to a baseline every x86-64 CPU of the last decade has (``PORTABLE_ENV``): ATen and oneDNN
  at AVX2, MKL on its ``COMPATIBLE`` branch, the one MKL documents as giving equal results on
  Intel and non-Intel CPUs. The variables are read when the libraries first dispatch, so they must
  be set before torch runs anything: the CLI starts the work in a fresh interpreter when the
  running one is not in the wanted mode (``WrongNumerics``).
- ``native``: whatever this machine picks (faster; the store's floats are then this CPU family's).

``describe(mode)`` is what ``created_by.numerics`` records. It holds no CPU model in portable mode,
so a portable store's bytes do not name the machine that built it.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import tempfile

from ..errors import ConfigError

MODES = ("portable", "native")

#: The pins of portable mode, set in the environment before torch loads.
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",       # ATen's own vectorized kernels (exp, add, ...)
    "ONEDNN_MAX_CPU_ISA": "AVX2",        # oneDNN's JIT convolutions (the context model's 5x5 conv)
    "MKL_CBWR": "COMPATIBLE,STRICT",     # MKL GEMM (1x1 and small convs) and vector math
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",   # MKL's dispatch cap, should a branch ever ignore CBWR
}
#: Environment variables that steer the numeric libraries; all that are set are recorded.
NUMERICS_PREFIXES = ("ATEN_", "ONEDNN_", "DNNL_", "MKL_", "OMP_", "KMP_")
#: mkl_serv_cbwr_get's branch codes as this MKL reports them (2024.2: a CPU-specific branch that
#: does not apply to the running CPU reads back as AUTO).
_MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE"}
_MKL_STRICT = 0x10000
#: The CPU features portable mode needs (AVX2 with FMA: Intel Haswell, AMD Excavator/Zen and later).
REQUIRED_FLAGS = ("avx2", "fma")


class WrongNumerics(ConfigError):
    """The running interpreter is not in `mode`: the CLI reruns the command in one that is."""

    def __init__(self, mode: str):
        pins = " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items())
        super().__init__(
            f"This process does not run with {mode} numerics, and they cannot change once torch has run: "
            + (f"start Python with {pins} in its environment" if mode == "portable"
               else f"start Python without {', '.join(PORTABLE_ENV)} in its environment")
            + " (the latentstore command does this itself)")
        self.mode = mode

    def environment(self) -> dict:
        """os.environ with the pins of `mode` set (portable) or removed (native)."""
        env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
        return {**env, **PORTABLE_ENV} if self.mode == "portable" else env


def _pinned() -> bool:
    """Whether this process's environment holds every portable pin (light: imports no torch)."""
    return all(os.environ.get(k) == v for k, v in PORTABLE_ENV.items())


def running_mode() -> str:
    """'portable' if this process runs pinned, in effect and not only in its environment; else 'native'."""
    live = effective()
    in_effect = (live["torch_cpu_capability"] == "AVX2" and live["onednn_isa"] == "Intel AVX2"
                 and live["mkl_cbwr"] == "COMPATIBLE,STRICT")
    return "portable" if _pinned() and in_effect else "native"


def environment_matches(mode: str) -> bool:
    """Whether this process's environment holds `mode`'s pins (light: imports no torch). The command line
    reruns itself when it does not, so a message printed before that would show twice."""
    return _pinned() == (mode == "portable")


def require(mode: str) -> None:
    """Raise WrongNumerics unless this process runs in `mode` (checked before anything is computed)."""
    if mode not in MODES:
        raise ValueError(f"numerics mode {mode!r} is not one of {MODES}")
    if mode == "portable":
        check_portable_cpu()
    if running_mode() != mode:
        raise WrongNumerics(mode)


def check_portable_cpu() -> None:
    missing = [f for f in REQUIRED_FLAGS if f not in cpu_flags()]
    if missing:
        raise ConfigError(f"This CPU lacks {', '.join(missing).upper()}, the baseline of portable numerics: build "
                          "here with --numerics native (the floats are then this CPU family's), and decode or "
                          "add to portable stores on a CPU with AVX2")


def describe(mode: str) -> dict:
    """What created_by.numerics records: the mode, the dispatch in effect, and the variables set."""
    entry = {"mode": mode, **effective(),
             "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(NUMERICS_PREFIXES)}}
    if mode == "native":  # a portable store must not depend on (or name) the machine
        entry["cpu"] = cpu_model()
    return entry


#: The fields of describe() that decide float bits (the rest is for people: the CPU's name, variables).
DISPATCH_FIELDS = ("mode", "torch_cpu_capability", "onednn_isa", "mkl", "mkl_cbwr")


def dispatch(created_by: dict) -> dict:
    """The dispatch fields of a created_by's numerics (a store from before the modes: native, unknown)."""
    recorded = created_by.get("numerics") or {"mode": "native"}
    return {k: recorded.get(k) for k in DISPATCH_FIELDS}


def differences(recorded: dict | None, running: dict) -> list[str]:
    """'field: recorded -> running' for each numerics field that differs (a store without a record:
    its mode only)."""
    recorded = recorded or {"mode": "native"}
    keys = [k for k in ("mode", "cpu", "torch_cpu_capability", "onednn_isa", "mkl", "mkl_cbwr", "env")
            if k in recorded or k in running]
    return [f"{k}: {recorded.get(k, '?')} -> {running.get(k, '?')}" for k in keys
            if recorded.get(k) != running.get(k)]


@functools.lru_cache(maxsize=1)
def effective() -> dict:
    """The dispatch torch, oneDNN and MKL use in this process (fixed once they first ran)."""
    import torch

    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_isa": _onednn_isa(), **_mkl()}


def _mkl() -> dict:
    """MKL's version string and code branch, from the MKL inside libtorch_cpu (where torch has one)."""
    import torch

    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        buf = ctypes.create_string_buffer(256)
        lib.MKL_Get_Version_String(buf, len(buf))
        code = lib.mkl_serv_cbwr_get(-1)  # MKL_CBWR_ALL: the branch and the STRICT flag
    except (OSError, AttributeError):
        return {"mkl": None, "mkl_cbwr": None}
    branch = _MKL_BRANCHES.get(code & ~_MKL_STRICT, f"code {code & ~_MKL_STRICT}")
    return {"mkl": buf.value.decode(), "mkl_cbwr": branch + (",STRICT" if code & _MKL_STRICT else "")}


def _onednn_isa() -> str | None:
    """The ISA oneDNN dispatches to, from its verbose header (printed by the C library to fd 1)."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return None
    with tempfile.TemporaryFile(mode="w+") as out:
        with _stdout_to(out.fileno()), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            # Straight to oneDNN: F.conv2d picks it or not by shape and thread count.
            torch.mkldnn_convolution(torch.ones(1, 8, 8, 8), torch.ones(8, 8, 3, 3), None, [0, 0], [1, 1], [1, 1], 1)
        out.seek(0)
        for line in out:
            if ",info,cpu,isa:" in line:
                return line.strip().split(",isa:", 1)[1]
    return None


@contextlib.contextmanager
def _stdout_to(fd: int):
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(fd, 1)
    try:
        yield
    finally:
        ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def _cpuinfo_field(name: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    import platform

    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set:
    return set(_cpuinfo_field("flags").split())
