"""Small terminal charts of memory curves: one block character per sample (or bucket)."""

from __future__ import annotations

from collections.abc import Sequence

BLOCKS = "▁▂▃▄▅▆▇█"
PHASE_MARK = "│"


def sparkline(values: Sequence[float], floor_span: float = 0.0, width: int = 60) -> str:
    """Scale to the data's span, but never to less than floor_span (the noise band), so a flat
    curve wandering within the band draws flat instead of as a dramatic zig-zag."""
    if not values:
        return ""
    vals = _bucket(list(values), width)
    lo, hi = min(vals), max(vals)
    span = max(hi - lo, floor_span, 1e-9)
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[min(top, int((v - lo) / span * top + 0.5))] for v in vals)


def phased_sparkline(phases: Sequence[tuple[str, Sequence[float]]], floor_span: float = 0.0, width: int = 64) -> str:
    """One chart across phases with a mark between them, all on the same scale."""
    allv = [v for _, vs in phases for v in vs]
    if not allv:
        return ""
    total = len(allv)
    lo, hi = min(allv), max(allv)
    span = max(hi - lo, floor_span, 1e-9)
    top = len(BLOCKS) - 1
    parts = []
    for _, vs in phases:
        if not vs:
            continue
        cols = max(1, round(len(vs) / total * width)) if total > width else len(vs)
        vals = _bucket(list(vs), cols)
        parts.append("".join(BLOCKS[min(top, int((v - lo) / span * top + 0.5))] for v in vals))
    return PHASE_MARK.join(parts)


def _bucket(values: list[float], width: int) -> list[float]:
    if len(values) <= width:
        return values
    out = []
    for i in range(width):
        a = i * len(values) // width
        b = max(a + 1, (i + 1) * len(values) // width)
        chunk = values[a:b]
        out.append(sum(chunk) / len(chunk))
    return out
