"""latentstore/flags.py: a frozen dataclass's fields become flags with their own defaults, help and choices."""
from dataclasses import dataclass

import pytest

from latentstore.errors import ConfigError
from latentstore.flags import comma_words, opt, options, parse_config


def _even(text: str) -> int:
    if int(text) % 2:
        raise ConfigError(f"{text} is odd: give an even number")
    return int(text)


@dataclass(frozen=True)
class Example:
    """An example command."""
    name: str = opt(help="what to call it")
    size: int | None = opt(None, "pixels (default: as stored)")
    mode: str = opt("fast", "how", ("fast", "exact"))
    taps: tuple = opt((8, 16), "strides")
    words: tuple = opt((), "names", parse=comma_words)
    scale: tuple | None = opt(None, "LOW HIGH", parse=float, nargs=2)
    even: int = opt(2, "an even number", parse=_even)
    verbose: bool = opt(False, "say more")
    progress: bool = opt(True, "a bar", off_flag="--quiet")


def test_fields_become_flags_with_the_field_defaults():
    cfg = parse_config(Example, ["--name", "a"])
    assert cfg == Example("a")
    cfg = parse_config(Example, ["--name", "a", "--size", "7", "--mode", "exact", "--taps", "4,8", "--words", "x, y",
                                 "--scale", "0.5", "2", "--even", "4", "--verbose"])
    assert cfg == Example("a", 7, "exact", (4, 8), ("x", "y"), (0.5, 2.0), 4, True)
    assert parse_config(Example, ["--name", "a", "--quiet"]).progress is False
    assert parse_config(Example, ["--name", "a", "--no-progress"]).progress is False


@pytest.mark.parametrize("argv,message", [
    ([], "the following arguments are required: --name"),
    (["--name", "a", "--mode", "slow"], "invalid choice: 'slow'"),
    (["--name", "a", "--even", "3"], "3 is odd: give an even number"),
    (["--name", "a", "--size", "big"], "invalid int value: 'big'"),
    (["--name", "a", "--nam", "b"], "unrecognized arguments: --nam"),
])
def test_bad_flags_exit_with_one_line_naming_them(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        parse_config(Example, argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_help_shows_each_default_once_where_it_means_something(capsys):
    with pytest.raises(SystemExit):
        parse_config(Example, ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "what to call it (required)" in text and "how (default: fast)" in text and "strides (default: 8,16)" in text
    assert "pixels (default: as stored)" in text and "names (default" not in text
    assert "say more (default: False)" in text
    shown = {o.name: o.shown_default() for o in options(Example)}
    assert shown == {"name": None, "size": None, "mode": "fast", "taps": "8,16", "words": None, "scale": None,
                     "even": "2", "verbose": "False", "progress": "True"}
