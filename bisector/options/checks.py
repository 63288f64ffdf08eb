"""The checks the option table (table.py) names: one for a value from `[tool.bisector]` or a
manifest entry (raises ValueError with what is wrong; config.validate adds file, table and key),
one for the text of a BISECTOR_* variable (returns what is wrong, or None; environment.py adds the
variable and the flag it stands for).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import Any

from bisector.common.errors import UserError
from bisector.common.units import format_bytes, parse_size
from bisector.judge.fail_on import KINDS, FailOn
from bisector.model.spec import parse_dim, parse_input

# A probe is a Python process with torch imported before the model does anything (measured,
# torch 2.13 CPU, a Linear(8, 8): 300 MB RSS forked from the probe server, 240 MB in a fresh
# interpreter). A cap below this kills every probe, which would read as "crashed", not as the
# typo it is.
MIN_MEM_CAP = 400 * 1000**2
# numpy.random.seed takes 0..2**32-1, and repair measures again with seed + 1: a seed outside
# this range failed inside the probe with bisector's own traceback (issue 19).
MAX_SEED = 2**32 - 2

ValueCheck = Callable[[Any], None]
TextCheck = Callable[[str], "str | None"]


def _one_or_many(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value)


# -- values from [tool.bisector] and manifest entries -------------------------------------------


def choices(*allowed: str) -> ValueCheck:
    def check(value: Any) -> None:
        for v in _one_or_many(value):
            if v not in allowed:
                close = difflib.get_close_matches(str(v), allowed, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise ValueError(f"unknown value {v!r}, use one of {', '.join(allowed)}{hint}")

    return check


def fail_on_kinds(value: Any) -> None:
    choices(*KINDS)([t.strip() for v in _one_or_many(value) for t in str(v).split(",") if t.strip()])


def size(minimum: int = 1) -> ValueCheck:
    def check(value: Any) -> None:
        try:
            n = parse_size(value, "value")
        except UserError as exc:
            raise ValueError(str(exc).replace("value ", "", 1)) from None
        if n < minimum:
            raise ValueError(f"{value!r} is below {format_bytes(minimum)}")

    return check


def at_least(low: float, strict: bool = False) -> ValueCheck:
    def check(value: Any) -> None:
        if value < low or (strict and value == low):
            raise ValueError(f"{value!r} must be {'above' if strict else 'at least'} {low:g}")

    return check


def between(low: int, high: int) -> ValueCheck:
    def check(value: Any) -> None:
        if not low <= value <= high:
            raise ValueError(f"{value!r} must be from {low} to {high}")

    return check


def _each(parse: Callable[[str], Any], value: Any) -> None:
    for v in _one_or_many(value):
        try:
            parse(v)
        except UserError as exc:
            raise ValueError(str(exc)) from None


def inputs(value: Any) -> None:
    _each(parse_input, value)


def dims(value: Any) -> None:
    _each(parse_dim, as_list(value, "dims"))


def spec(value: Any) -> None:
    file_part, sep, name = value.rpartition(":")
    if not sep or not file_part or not name:
        raise ValueError(f"{value!r} is not PATH.py:NAME, e.g. models/net.py:Net")


def as_list(value: Any, key: str) -> list[str]:
    """A config value that may be one string or a list of strings (dims: also a table)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, dict) and key == "dims":
        return [f"{k}={v}" for k, v in value.items()]
    raise UserError(f"[tool.bisector] {key} must be a string or a list of strings")


# -- the text of BISECTOR_* variables --------------------------------------------------------------

# click's spelling of booleans (BISECTOR_FRESH is a flag), any case.
_BOOLS = {"1", "0", "true", "false", "t", "f", "yes", "no", "y", "n", "on", "off"}


def whole_text(low: int, high: int | None = None) -> TextCheck:
    def check(text: str) -> str | None:
        try:
            n = int(text)
        except ValueError:
            return "is not a whole number"
        if n < low or (high is not None and n > high):
            return f"must be from {low} to {high}" if high is not None else f"must be {low} or more"
        return None

    return check


def seconds_text(text: str) -> str | None:
    try:
        value = float(text)
    except ValueError:
        return "is not a number of seconds"
    return None if 0 < value < math.inf else "must be a positive number of seconds"


def size_text(minimum: int) -> TextCheck:
    def check(text: str) -> str | None:
        try:
            n = parse_size(text)
        except UserError:
            return "is not a size such as 8GB or 500MiB"
        return None if n >= minimum else f"is below {format_bytes(minimum)}"

    return check


def one_of_text(allowed: tuple[str, ...], several: bool = False) -> TextCheck:
    def check(text: str) -> str | None:
        words = text.split() if several else [text]
        bad = [w for w in words if w not in allowed]
        return f"is not one of {', '.join(allowed)}" if bad or not words else None

    return check


def bool_text(text: str) -> str | None:
    return None if text.strip().lower() in _BOOLS else "is not a boolean (1/0, true/false, yes/no)"


def fail_on_text(text: str) -> str | None:
    try:
        FailOn.parse(text)
    except UserError:
        return f"is not a comma-separated list of {', '.join(KINDS)}"
    return None
