"""The teacher arguments of a build as plain data: checking them needs no torch (`latentstore build` argument
errors come at once; tests/test_startup.py)."""
from __future__ import annotations

import difflib
import functools
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..errors import ConfigError

#: How teacher features are stored (latentstore/teacher/dtypes.py quantizes to each).
TEACHER_DTYPES = ("float16", "bfloat16", "int8")
DEFAULT_STRIDES = (8, 16, 32)
#: BuildConfig fields that describe the teacher (kept out of the build identity when there is none).
TEACHER_ARGS = ("teacher", "teacher_weights", "teacher_strides", "teacher_layers", "teacher_dtype")
SEGMENTATION_TEACHERS = {"pspnet50"}  # latentstore.models.PSPNet, layers by name, weights from a file
#: timm.list_models() of the pinned timm, written by scripts/timm_models.py (first line: "# timm VERSION: ...").
TIMM_MODELS = Path(__file__).resolve().parents[1] / "data" / "timm_models.txt"


@functools.cache
def timm_models() -> tuple[str, frozenset]:
    """(timm version, model names) of the table."""
    header, *names = TIMM_MODELS.read_text().splitlines()
    return header.split()[2].rstrip(":"), frozenset(names)


def check_teacher_name(name: str | None) -> None:
    """Refuse a --teacher that names no timm model, from the table, without importing timm (seconds).

    Names with a pretrained tag or a hub prefix ("resnet50.a1_in1k", "hf-hub:...") and any name under
    another timm than the table's are left to timm itself, when the teacher loads."""
    if name is None or name in SEGMENTATION_TEACHERS or "." in name or ":" in name:
        return
    table_version, names = timm_models()
    try:
        installed = version("timm")
    except PackageNotFoundError:
        installed = None
    if installed != table_version or name in names:
        return
    close = difflib.get_close_matches(name, sorted(names), n=3)
    raise ConfigError(f"Unknown --teacher {name!r}: timm {table_version} has no such model"
                      + (f" (did you mean {', '.join(close)}?)" if close else "")
                      + "; python -c \"import timm; print(timm.list_models('resnet*'))\" lists its names")


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
