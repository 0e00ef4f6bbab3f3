"""The teacher arguments of a build as plain data: checking them needs no torch (`latentstore build` argument
errors come at once; tests/test_startup.py)."""
from __future__ import annotations

from ..errors import ConfigError

#: How teacher features are stored (latentstore/teacher/dtypes.py quantizes to each).
TEACHER_DTYPES = ("float16", "bfloat16", "int8")
DEFAULT_STRIDES = (8, 16, 32)
#: BuildConfig fields that describe the teacher (kept out of the build identity when there is none).
TEACHER_ARGS = ("teacher", "teacher_weights", "teacher_strides", "teacher_layers", "teacher_dtype")


def parse_list(value, cast=str) -> tuple:
    """"8,16,32" -> (8, 16, 32); tuples pass through."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    try:
        return tuple(cast(v) for v in (value or ()))
    except ValueError as exc:
        raise ConfigError(f"Could not read {value!r} as a comma-separated list: {exc}") from exc


def resolve_teacher_args(strides, layers) -> dict:
    """Canonical teacher_strides/teacher_layers for BuildConfig: layers, when given, replace the strides."""
    layers = parse_list(layers)
    return {"teacher_layers": layers, "teacher_strides": () if layers else parse_list(strides, int)}
