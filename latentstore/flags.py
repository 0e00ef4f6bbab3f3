"""Config dataclass -> command-line flags: each field's default, help and choices live in the field, once.

A field declared with ``opt(default, help, choices)`` becomes ``--field-name``. Its type decides how the
flag's text is read (bool: --x/--no-x; int, float, str; tuple: comma-separated ints), unless ``parse``
says otherwise. ``options(cls)`` lists one ``Option`` per field; ``parse_config`` turns them into an
argparse parser (the trainers and eval scripts, with ``--config FILE.yaml``), and ``latentstore build``
turns the same list into click options (commands/cli.py). Imports no torch: --help and flag errors
answer at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import Callable

from .errors import ConfigError


def opt(default=MISSING, help="", choices=None, *, required: bool = False, parse: Callable | None = None,
        nargs: int | None = None, metavar: str | None = None, off_flag: str | None = None):
    """A config field and its flag. `help` may be a function (computed only when help is shown).
    `parse` reads the flag's text (raising ConfigError with the reason, or ValueError); with `nargs`
    it reads each of the N words. `required`: the command line must give it although the field has a
    default (None: a subclass may still add fields with defaults). A field without a default is required.
    `off_flag`: a bool's second spelling of --no-x (e.g. --quiet for --no-progress)."""
    return field(default=default, metadata={"help": help, "choices": tuple(choices) if choices else None,
                                            "required": required, "parse": parse, "nargs": nargs,
                                            "metavar": metavar, "off_flag": off_flag})


def comma_ints(text: str) -> tuple:
    """'3,5' -> (3, 5); '' -> ()."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{text!r} is not a comma-separated list of integers (e.g. 8,16,32)") from None


def comma_words(text: str) -> tuple:
    """'a, b' -> ('a', 'b'); '' -> ()."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


@dataclass(frozen=True)
class Option:
    """One flag, as a parser needs it."""
    name: str                   # the field
    flag: str                   # --field-name
    is_bool: bool               # --x/--no-x
    parse: Callable             # the flag's text (each word, with nargs) -> value
    default: object
    required: bool
    choices: tuple | None
    help: str | Callable
    nargs: int | None
    metavar: str | None
    off_flag: str | None = None     # a bool's other spelling of --no-x

    def help_text(self) -> str:
        return self.help() if callable(self.help) else self.help

    def shown_default(self) -> str | None:
        """The default as help shows it; None where it says nothing (required, empty, or the help tells)."""
        if self.required or self.default in (None, "", ()) or "default" in self.help_text():
            return None
        if isinstance(self.default, tuple):
            return ",".join(map(str, self.default)) if self.nargs is None else " ".join(map(str, self.default))
        return str(self.default)

    def from_config_file(self, value):
        """A value of a YAML config file, typed as the flag would be (ValueError/TypeError/ConfigError if not)."""
        if self.is_bool:
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            if self.nargs:
                return tuple(self.parse(str(v)) for v in value)
            return self.parse(",".join(str(v) for v in value))
        return self.parse(str(value))


def _base_type(tp):
    """`int | None` -> int; other annotations as they are."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        rest = [t for t in typing.get_args(tp) if t is not type(None)]
        return rest[0] if len(rest) == 1 else str
    return tp


def _type_parser(tp) -> Callable:
    tp = _base_type(tp)
    if tp is tuple or typing.get_origin(tp) is tuple:
        return comma_ints
    return tp if tp in (int, float, str) else str


def options(cls) -> list[Option]:
    """One Option per field of the dataclass `cls`, in field order."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        default = f.default if f.default is not MISSING else None
        found.append(Option(
            name=f.name, flag="--" + f.name.replace("_", "-"), is_bool=_base_type(hints[f.name]) is bool,
            parse=meta.get("parse") or _type_parser(hints[f.name]), default=default,
            required=f.default is MISSING or bool(meta.get("required")), choices=meta.get("choices"),
            help=meta.get("help", ""), nargs=meta.get("nargs"), metavar=meta.get("metavar"),
            off_flag=meta.get("off_flag")))
    return found


# --------------------------------------------------------------------------- argparse (trainers, eval scripts)

def _argparse_type(option: Option) -> Callable:
    """`option.parse` for argparse: a ConfigError's reason becomes argparse's message."""
    def read(text: str):
        try:
            return option.parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
    read.__name__ = getattr(option.parse, "__name__", "value")   # argparse: "invalid int value: 'x'"
    return read


def _help(option: Option) -> str:
    text = option.help_text().replace("%", "%%")
    if option.required:
        return f"{text} (required)"
    shown = option.shown_default()
    return f"{text} (default: {shown.replace('%', '%%')})" if shown is not None else text


def _yaml_values(path: str, by_name: dict) -> dict:
    """The flags FILE.yaml sets ({field: value}), typed as the flags would be; an unknown key or a
    value of the wrong type is a ConfigError naming the file and the key."""
    import yaml  # only where --config is given: --help stays fast

    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of flag names to values")
    typed = {}
    for key, value in values.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in by_name:
            raise ConfigError(f"--config {path}: unknown key {key!r} (keys are flag names, e.g. lr or batch-size)")
        option = by_name[name]
        try:
            typed[name] = option.from_config_file(value)
        except ConfigError as exc:
            raise ConfigError(f"--config {path}: {key}: {exc}") from exc
        except (TypeError, ValueError) as exc:
            kind = "bool" if option.is_bool else getattr(option.parse, "__name__", "value")
            raise ConfigError(f"--config {path}: {key}: {value!r} is not a valid {kind}") from exc
        if option.choices and typed[name] not in option.choices:
            raise ConfigError(f"--config {path}: {key}: {value!r} is not one of {', '.join(option.choices)}")
    return typed


def parse_config(cls, argv=None, *, prog: str | None = None, description: str | None = None,
                 defaults: dict | None = None):
    """Parse `argv` (None: sys.argv) into the frozen dataclass `cls` (then its ``validate()``, if any);
    unknown flags and bad values exit with a usage error (status 2). `defaults` replace field defaults
    for this command. `--config FILE.yaml` sets any flag (keys are flag names); flags given on the command
    line override it."""
    opts = [dataclasses.replace(o, default=defaults[o.name]) if o.name in (defaults or {}) else o
            for o in options(cls)]
    parser = argparse.ArgumentParser(prog=prog, description=description or (cls.__doc__ or "").strip(),
                                     allow_abbrev=False)
    parser.add_argument("--config", metavar="FILE.yaml", default="",
                        help="YAML file of flag values (e.g. a run's args.yaml); flags given here override it")
    for o in opts:
        if o.is_bool:
            action = parser.add_argument(o.flag, action=argparse.BooleanOptionalAction, default=o.default,
                                         help=o.help_text().replace("%", "%%"))
            if "%(default)" not in action.help:   # BooleanOptionalAction adds it on some Pythons
                action.help += " (default: %(default)s)"
            if o.off_flag:
                parser.add_argument(o.off_flag, dest=o.name, action="store_false", help=f"same as --no-{o.flag[2:]}")
        else:
            parser.add_argument(o.flag, type=_argparse_type(o), default=o.default, choices=o.choices,
                                nargs=o.nargs, metavar=o.metavar, help=_help(o), required=o.required)
    # --config first, on its own: required flags (e.g. --store, --out) may come from the file
    pre_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre_parser.add_argument("--config", default="")
    pre, _ = pre_parser.parse_known_args(argv)
    if pre.config:
        try:
            values = _yaml_values(pre.config, {o.name: o for o in opts})
        except ConfigError as exc:
            parser.error(str(exc))
        parser.set_defaults(**values)
        for action in parser._actions:       # a required flag the file sets is no longer required
            if action.dest in values:
                action.required = False
    args = vars(parser.parse_args(argv))  # unknown flag: argparse prints usage and exits with status 2
    args.pop("config")
    cfg = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})  # nargs: a list
    try:
        if hasattr(cfg, "validate"):
            cfg.validate()
    except ConfigError as exc:
        parser.error(str(exc))
    return cfg
