"""A user's own coder, named by `--coder package.module:ClassOrFactory`: imported from that argument alone,
checked to be a CompressionModel with g_s, and identified by the sha256 of its module's source file.

The import runs only because the user named the module on the command line (or the manifest of a store
they built names it, for verify --decode, add-teacher and a resumed build). What the store records
(``weights["code"]``: module, qualified name, source file, its sha256) lets every later use refuse a
changed source, apart from changed weights (``weights["sha256"]``), naming which one changed.
"""
from __future__ import annotations

import importlib
import inspect

import torch

from ..errors import ConfigError, WeightsError
from ..store.format import file_sha256


def resolve(name: str):
    """(the class or factory `name` points to, {"module", "qualname", "file", "sha256"})."""
    module_name, _, qualname = name.partition(":")
    if not module_name or not qualname:
        raise ConfigError(f"--coder {name!r}: write a custom coder as package.module:ClassOrFactory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--coder {name}: cannot import {module_name} ({exc}); put its folder on PYTHONPATH "
                          "or pip install its package") from exc
    target = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"--coder {name}: {module_name} has no {qualname}")
    source = inspect.getsourcefile(module)
    if source is None:
        raise ConfigError(f"--coder {name}: {module_name} has no Python source file to identify it by")
    code = {"module": module_name, "qualname": qualname, "file": source, "sha256": file_sha256(source)}
    return target, code


def build_model(name: str, target, state: dict | None, source: str) -> torch.nn.Module:
    """target() (a class or a factory, called without arguments), loaded with `state` where given."""
    try:
        model = target()
    except Exception as exc:
        raise ConfigError(f"--coder {name}: calling {getattr(target, '__qualname__', target)}() failed ({exc}); "
                          "it must build the model without arguments") from exc
    check_model(model)
    if state is not None:
        try:
            model.load_state_dict(state)
        except Exception as exc:
            raise WeightsError(f"{source} does not fit --coder {name}: {str(exc).splitlines()[0]}") from exc
    model.update(force=state is None)  # tables from the checkpoint where it has them, like zoo coders
    return model.eval()


def check_model(model) -> None:
    """What the generic path needs of a model, refused in one line."""
    from compressai.models import CompressionModel

    if not isinstance(model, CompressionModel) or not isinstance(getattr(model, "g_s", None), torch.nn.Module):
        raise ConfigError(f"{type(model).__module__}.{type(model).__qualname__} is not usable: a coder must be a "
                          "compressai.models.CompressionModel with compress(), decompress() and a g_s module "
                          "(ŷ is captured as g_s's input)")


def check_same_code(name: str, recorded: dict | None) -> None:
    """Refuse a custom coder whose module source changed since the store recorded it."""
    if recorded is None:
        return
    _, code = resolve(name)
    if code["sha256"] != recorded["sha256"]:
        raise WeightsError(
            f"The source of --coder {name} ({code['file']}) changed since the store was built (sha256 "
            f"{code['sha256'][:12]}… != {recorded['sha256'][:12]}…): restore the module the store was built "
            "with, or build into a new --out")
