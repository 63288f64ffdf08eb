"""Byte sizes: parsing "5MB" from users and printing figures they can read."""

from __future__ import annotations

import re

from bisector.common.errors import UserError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
    "p": 1000**5,
    "pb": 1000**5,
    "pib": 1024**5,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(text: str | int | float, what: str = "size") -> int:
    """Parse "5MB", "200 MiB", "1.5G" or a plain number of bytes."""
    hint = "try e.g. 5MB, 200MiB or 1G"
    # bool is an int to Python, and a config value of true is no size; a list or table is no
    # size either: all are user errors, never a TypeError from int().
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UserError(f"{what} {text!r} is not a size; {hint}")
    if isinstance(text, int):
        return text
    if isinstance(text, float):
        value = text
    else:
        m = _SIZE.match(text)
        if not m or m.group(2).lower() not in _UNITS:
            raise UserError(f"{what} {text!r} is not a size; {hint}")
        value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value != value or value in (float("inf"), float("-inf")):  # "1e999" is inf: no size
        raise UserError(f"{what} {text!r} is not a size; {hint}")
    return int(value)


def format_bytes(value: float | None, signed: bool = False) -> str:
    """1234567 -> '1.2 MB' (decimal units, as psutil users and the seed article count)."""
    if value is None:
        return "-"
    sign = "+" if signed and value > 0 else ("-" if value < 0 else "")
    v = abs(float(value))
    for unit, scale in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if v >= scale:
            return f"{sign}{v / scale:.1f} {unit}"
    return f"{sign}{v:.0f} B"


# What one step of each stage is: growth reads "/call" in eager, "/export" and "/run" elsewhere,
# in the text, the JSON's labels, the HTML and the charts alike.
PER_STAGE = {"eager": "call", "export": "export", "inference": "run"}


def probes_text(probes: int, reused: int = 0) -> str:
    """The probes a run ran, and those it reused from an earlier run's cache: a run that reused
    all of them says "reused 8 probes", never "0 probes"."""
    if probes == 0 and reused:
        return f"reused {reused} probe{'s' if reused != 1 else ''}"
    text = f"{probes} probe{'s' if probes != 1 else ''}"
    return text + (f" (+{reused} reused)" if reused else "")


def per(stage: str) -> str:
    """One step of a stage: "call", "export" or "run"."""
    return PER_STAGE.get(stage, "call")


def staged_unit(unit: str, stage: str) -> str:
    """A per-call unit ("bytes/call", "objects/call") in the stage's own step ("bytes/export")."""
    return unit[: -len("/call")] + "/" + per(stage) if unit.endswith("/call") else unit
