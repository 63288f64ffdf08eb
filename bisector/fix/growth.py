"""The figure a fix must bring down, and when its curve counts as flat.

A culprit is judged on exact object counts when it was judged on them, else on bytes; per call for
a leak, per new shape for shape-growth. A fix must bring that figure down by KEEP_DROP (or to
clean); a fix that bounds a container to N entries is judged past its first N calls or new shapes.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from bisector.common.units import format_bytes
from bisector.find.localise import Culprit
from bisector.fixers.base import UNSUPPORTED_OP  # stdlib only: a stage the exporter could not get through
from bisector.judge.verdict import CLEAN, LEAK
from bisector.lab.results import StageResult, outcome_of
from bisector.model.kinds import Kind

KEEP_DROP = 0.9  # growth must drop by at least this share


def growth(figures: Mapping[str, Any], kind: str) -> tuple[float, str]:
    """The figure a fix must bring down: exact object counts when the culprit was judged on them,
    else bytes; per call for a leak, per new shape for shape-growth."""
    exact = bool(figures.get("exact"))
    if kind in (LEAK, Kind.TOOLCHAIN_LEAK):  # the toolchain's own growth is per call too
        if exact and figures.get("objects_per_call") is not None:
            return float(figures["objects_per_call"]), "objects/call"
        return float(figures.get("growth_bytes_per_call") or 0.0), "bytes/call"
    if exact and figures.get("objects_per_new_shape") is not None:
        return float(figures["objects_per_new_shape"]), "objects/new shape"
    return float(figures.get("growth_bytes_per_new_shape") or 0.0), "bytes/new shape"


def warm_calls(c: Culprit, bound: int | None) -> int:
    """A fix that bounds a per-call container to N entries is measured after N warm-up calls: a
    leak adds at least one entry a call, so the container is full before the repeat phase, however
    few shapes the schedule repeats (a tensor kept to 8 rows, with one shape, filled for 8 calls)."""
    return int(bound) if bound and c.kind == LEAK else 0


def holds(c: Culprit, stage: StageResult | None) -> bool:
    """The culprit's stage measured again after a fix: clean, or (for a growth) down by KEEP_DROP
    against the culprit's own figure; for a stage that could not run, that it runs and is clean."""
    if stage is None or stage.verdict is None:
        return False
    if stage.kind == CLEAN:
        return True
    if c.kind == UNSUPPORTED_OP:
        return False
    before, _ = growth(c.figures, c.kind)
    after = growth(outcome_of(stage.verdict, stage.curve, stage.control).figures, c.kind)[0]
    return before > 0 and after <= (1 - KEEP_DROP) * before


def region_total(figures: Mapping[str, Any], kind: str, unit: str, share: float) -> float:
    """What the culprit's region leaks alone (children included), in growth()'s unit: the share
    itself, except for a region named for what it leaks beyond its children."""
    if not figures.get("beyond_children") or not unit.startswith("objects"):
        return share
    key = "region_objects_per_call" if kind == LEAK else "region_objects_per_new_shape"
    return float(figures.get(key) or share)


def past_bound(
    figures: Mapping[str, Any], kind: str, bound: int, before: Mapping[str, Any]
) -> tuple[float, float, str] | None:
    """A bounded container's growth once it is full: (after, before, unit) per call (a leak) or per
    new shape, fitted over the curve's samples past the first `bound` calls or distinct shapes.
    A memo bounded to N entries still grows over its first N new shapes, then stops: it is judged on
    what follows, not averaged over the whole range. Judged on objects (the entries it holds) when
    objects grew before, else on the bytes metric that decided. None when the schedule does not
    reach past the bound (too few samples to judge: the whole range decides, as for any fix)."""
    per = "call" if kind == LEAK else "new shape"
    objects_before = before.get("objects_per_call" if kind == LEAK else "objects_per_new_shape")
    if objects_before:
        metric, before_rate, unit = "objects", float(objects_before), f"objects/{per}"
    else:
        metric = str(figures.get("growth_metric") or before.get("growth_metric") or "rss")
        before_rate, unit = growth(before, kind)[0], f"bytes/{per}"
    seen: set[tuple[Any, ...]] = set()
    tail: list[float] = []
    for n, s in enumerate(figures.get("samples") or (), 1):
        seen.add(tuple(sorted((s.get("dims") or {}).items())))
        entries = n if kind == LEAK else len(seen)
        phase = "repeat" if kind == LEAK else "novel"
        if s.get("phase") == phase and entries > bound and s.get(metric) is not None:
            tail.append(float(s[metric]))
    if len(tail) < 3:
        return None
    slope = statistics.linear_regression(range(len(tail)), tail).slope
    return max(0.0, slope), before_rate, unit


def flat_past_bound(figures: Mapping[str, Any], kind: str, bound: int | None, before: Mapping[str, Any]) -> str:
    """Why a bounded fix counts as flat ("bounded at 8: +0.0 objects/new shape past the first 8,
    was +3.0"), or "" when it does not (no bound, too few samples past it, or still growing)."""
    if bound is None or kind not in (LEAK, Kind.SHAPE_GROWTH):
        return ""
    judged = past_bound(figures, kind, bound, before)
    if judged is None:
        return ""
    after, was, unit = judged
    if was <= 0 or after > (1 - KEEP_DROP) * was:
        return ""
    first = "calls" if kind == LEAK else "new shapes"
    return f"bounded at {bound}: {fmt_rate(after, unit)} past the first {bound} {first}, was {fmt_rate(was, unit)}"


def fmt_rate(value: float, unit: str) -> str:
    """A growth rate in growth()'s unit: "+1.5 MB/call", "+3.0 objects/new shape"."""
    if unit.startswith("bytes"):
        return f"{format_bytes(value, signed=True)}/{unit.split('/', 1)[1]}"
    return f"{value:+.1f} {unit}"
