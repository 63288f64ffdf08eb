"""Keep or drop a measured candidate, and why.

A candidate is kept when the culprit's region is flat (clean, or its growth down by KEEP_DROP; past
its bound for a fix that declares one), the whole model is down by the culprit's share, and the
outputs are equivalent (or changed by design and allowed). Against a budget the question is the
projected peak instead; for a stage that could not run, that it runs now with the same outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bisector.common.units import format_bytes, staged_unit
from bisector.find.localise import Culprit
from bisector.fix.growth import KEEP_DROP, flat_past_bound, fmt_rate, growth, region_total
from bisector.fixers.base import UNSUPPORTED_OP  # stdlib only: a stage the exporter could not get through
from bisector.judge.search import Outcome
from bisector.judge.verdict import CLEAN
from bisector.model.kinds import Kind

NO_DIFFS: Mapping[str, Any] = {"equivalent": None, "max_abs_diff": None, "max_rel_diff": None}


def _region_down(kind: str, before: float, after: float, region_before: float) -> bool:
    """The region clean, or its own share of the growth down by KEEP_DROP (region_before: what it
    leaks with its children, for a region named for what it leaks beyond them)."""
    return kind == CLEAN or (before > 0 and after <= (1 - KEEP_DROP) * before + (region_before - before))


def region_flat(c: Culprit, region: Outcome, bound: int | None) -> bool:
    """decide's test of the region alone: clean, or its growth down by KEEP_DROP (past its bound
    for a bounded fix). A region that is not flat drops the candidate whatever the whole model does."""
    before, unit = growth(c.figures, c.kind)
    after = 0.0 if region.kind == CLEAN else growth(region.figures, c.kind)[0]
    if _region_down(region.kind, before, after, region_total(c.figures, c.kind, unit, before)):
        return True
    return bool(flat_past_bound(region.figures, c.kind, bound, c.figures))


def decide(
    c: Culprit,
    region: Outcome,
    whole: Outcome,
    whole_before: Mapping[str, Any],
    changes_outputs: bool,
    allow_output_changes: bool,
    equivalence: Callable[[], Mapping[str, Any]],
    bound: int | None = None,
    under_budget: float | None = None,
) -> dict[str, Any]:
    """Keep or drop, and why: the region flat (clean, or growth down by KEEP_DROP), the whole
    model down by the culprit's share, outputs equivalent (or changed by design and allowed).
    Outputs are compared only for a candidate that flattens the curve. A fix that declares a bound
    (a memo kept to N entries) is flat when growth stops past its first N calls or new shapes
    (flat_past_bound), even where the average over the whole range is not."""
    if region.kind in (Kind.FAILED, Kind.CRASHED):
        return dict(
            **NO_DIFFS, kept=False, reason=f"dropped: probing {c.region or 'the model'} {region.kind}: {region.message}"
        )
    if c.kind == UNSUPPORTED_OP:
        return _runs_now(c, whole, equivalence)
    before, unit = growth(c.figures, c.kind)
    unit = staged_unit(unit, c.stage)  # shown per export or per run where the stage says so
    after = 0.0 if region.kind == CLEAN else growth(region.figures, c.kind)[0]
    if under_budget is not None:
        # Judged against the budget (the stage's projected peak was over it): the peak, not the
        # slope, is the question, and this fix brings it under; the outputs must still match.
        change = f"{fmt_rate(before, unit)} -> {fmt_rate(after, unit)}, {region.kind}"
        change += f", peak under the budget {format_bytes(under_budget)}"
        return _outputs_decide(equivalence(), change, before - after, changes_outputs, allow_output_changes)
    # A region named for what it leaks beyond its children: probed alone it still shows the
    # children's share, so the bar is its own share gone from the region's total.
    region_before = region_total(c.figures, c.kind, unit, before)
    change = f"{fmt_rate(region_before, unit)} -> {fmt_rate(after, unit)}, {region.kind} after the fix"
    saved = region_before - after
    bounded = ""
    if not _region_down(region.kind, before, after, region_before):
        bounded = flat_past_bound(region.figures, c.kind, bound, c.figures)
        if not bounded:
            return dict(**NO_DIFFS, kept=False, saved=saved, reason=f"dropped: not flat enough: {change}")
        change = f"{change}; {bounded}"
    if not _whole_flat(c, whole, whole_before, before, bound, bounded):
        return dict(
            **NO_DIFFS,
            kept=False,
            saved=saved,
            reason=f"dropped: the region's growth falls ({change}) but the whole model still grows ({whole.kind})",
        )
    return _outputs_decide(equivalence(), change, saved, changes_outputs, allow_output_changes, flat=True)


def _runs_now(c: Culprit, whole: Outcome, equivalence: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    """A stage that could not run (nothing grew): kept when it runs now and its ONNX outputs match."""
    change = f"{c.stage} failed -> {c.stage} runs ({whole.kind})"
    verdict = _outputs_decide(equivalence(), change, 0.0, changes_outputs=False, allow_output_changes=False)
    return {**verdict, "saved": 1.0} if verdict["kept"] else verdict


def _whole_flat(
    c: Culprit, whole: Outcome, whole_before: Mapping[str, Any], before: float, bound: int | None, bounded: str
) -> bool:
    """The whole model down by the culprit's share (or clean; past the bound for a bounded fix
    whose region was judged past it)."""
    whole_b = growth(whole_before, c.kind)[0] if whole_before else before
    whole_a = 0.0 if whole.kind == CLEAN else growth(whole.figures, c.kind)[0]
    flat = whole.kind == CLEAN or whole_a <= whole_b - KEEP_DROP * before + 1e-9
    if not flat and bounded:
        flat = bool(flat_past_bound(whole.figures, c.kind, bound, whole_before or c.figures))
    return flat


def _outputs_decide(
    eq: Mapping[str, Any],
    change: str,
    saved: float,
    changes_outputs: bool,
    allow_output_changes: bool,
    flat: bool = False,
) -> dict[str, Any]:
    """decide's last step: kept when the outputs match (or change by design and that is allowed).
    flat: the candidate flattened the curve (said so in the reason, and a fix that changes outputs
    by design is "not kept" with how to allow it rather than "dropped")."""
    what = f"flat ({change})" if flat else change
    if eq.get("failed"):
        why = f"dropped: {what} but outputs could not be compared: {eq['failed']}"
        return dict(**NO_DIFFS, kept=False, saved=saved, reason=why)
    equivalent = bool(eq.get("equivalent"))
    diffs = dict(equivalent=equivalent, max_abs_diff=eq.get("max_abs_diff"), max_rel_diff=eq.get("max_rel_diff"))
    if not equivalent and flat and changes_outputs and not allow_output_changes:
        return dict(
            **diffs,
            kept=False,
            saved=saved,
            reason=(
                f"not kept: {what} but changes outputs by design ({eq.get('why')}); pass "
                "--allow-output-changes to keep it"
            ),
        )
    if not equivalent and (not changes_outputs or not allow_output_changes):
        return dict(**diffs, kept=False, saved=saved, reason=f"dropped: {what} but outputs differ ({eq.get('why')})")
    label = "kept (changes outputs, allowed)" if not equivalent else "kept"
    return dict(**diffs, kept=True, saved=saved, reason=f"{label}: {change}")


def trade_off(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, float | None]:
    """What a fix costs up front (memory in place before the first measured call, a warm-up's
    arena) against what it saves: the whole model's largest RSS over the declared range without
    and with it, and the growth over the range it prevents."""

    def f(m: Mapping[str, Any], k: str) -> float | None:
        v = m.get(k)
        return None if v is None else float(v)

    b0, b1, a0, a1 = (
        f(before, "rss_before_loop"),
        f(before, "rss_peak"),
        f(after, "rss_before_loop"),
        f(after, "rss_peak"),
    )
    upfront = a0 - b0 if a0 is not None and b0 is not None else None
    prevented = (b1 - b0) - (a1 - a0) if None not in (a0, a1, b0, b1) else None  # type: ignore[operator]
    return {"upfront_bytes": upfront, "steady_before_bytes": b1, "steady_after_bytes": a1, "prevented_bytes": prevented}
