"""BISECTOR_* environment variables, checked up front as their flags are.

The command line reads a variable only when its flag is not given, so a bad one went unnoticed
while a flag covered it (and broke the next run without the flag), and BISECTOR_CAPTURE_CAP fell
back to its default without a word. Every variable bisector reads is checked here before any
probe, with the same one line and exit 2 as a bad flag.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping

from bisector.common.errors import UserError
from bisector.common.units import format_bytes, parse_size
from bisector.judge.fail_on import KINDS, FailOn
from bisector.model.choices import DEVICES, EXPORTERS, METRICS, STAGES
from bisector.options.config import MAX_SEED, MIN_MEM_CAP

# click's spelling of booleans (BISECTOR_FRESH is a flag), any case.
_BOOLS = {"1", "0", "true", "false", "t", "f", "yes", "no", "y", "n", "on", "off"}


def _whole(low: int, high: int | None = None) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        try:
            n = int(text)
        except ValueError:
            return "is not a whole number"
        if n < low or (high is not None and n > high):
            return f"must be from {low} to {high}" if high is not None else f"must be {low} or more"
        return None

    return check


def _seconds(text: str) -> str | None:
    try:
        value = float(text)
    except ValueError:
        return "is not a number of seconds"
    return None if 0 < value < math.inf else "must be a positive number of seconds"


def _size(minimum: int) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        try:
            n = parse_size(text)
        except UserError:
            return "is not a size such as 8GB or 500MiB"
        return None if n >= minimum else f"is below {format_bytes(minimum)}"

    return check


def _one_of(allowed: tuple[str, ...], several: bool = False) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        words = text.split() if several else [text]
        bad = [w for w in words if w not in allowed]
        return f"is not one of {', '.join(allowed)}" if bad or not words else None

    return check


def _bool(text: str) -> str | None:
    return None if text.strip().lower() in _BOOLS else "is not a boolean (1/0, true/false, yes/no)"


def _fail_on(text: str) -> str | None:
    try:
        FailOn.parse(text)
    except UserError:
        return f"is not a comma-separated list of {', '.join(KINDS)}"
    return None


# Variable -> (the flag it stands for, its check). Paths (BISECTOR_RUN_DIR, BISECTOR_CONFIG,
# BISECTOR_CACHE) are checked where they are used, with the flags they stand for.
CHECKS: Mapping[str, tuple[str, Callable[[str], str | None]]] = {
    "BISECTOR_JOBS": ("--jobs", _whole(1)),
    "BISECTOR_SEED": ("--seed", _whole(0, MAX_SEED)),
    "BISECTOR_TIMEOUT": ("--timeout", _seconds),
    "BISECTOR_MEM_CAP": ("--mem-cap", _size(MIN_MEM_CAP)),
    "BISECTOR_FRESH": ("--fresh", _bool),
    "BISECTOR_STAGE": ("--stage", _one_of(STAGES, several=True)),
    "BISECTOR_EXPORTER": ("--exporter", _one_of(EXPORTERS)),
    "BISECTOR_DEVICE": ("--device", _one_of(DEVICES)),
    "BISECTOR_METRIC": ("--metric", _one_of(METRICS)),
    "BISECTOR_FAIL_ON": ("--fail-on", _fail_on),
    "BISECTOR_BUDGET": ("--budget", _size(1)),
    "BISECTOR_CAPTURE_CAP": ("capture_cap", _size(1)),
}


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Raise UserError for the first BISECTOR_* variable that is set to something its flag refuses.
    An empty variable is unset, as click takes it."""
    environ = os.environ if environ is None else environ
    for name, (flag, check) in CHECKS.items():
        text = environ.get(name, "")
        if not text:
            continue
        problem = check(text.strip())
        if problem:
            raise UserError(f"{name}={text!r}: {flag} {problem}; fix or unset the variable")
