"""Which kept fix goes into a patch: the ranking of a culprit's evaluated fixes, the default
choice among the kept ones, and why none was chosen.

Duck-typed on the fix engine's evaluations (bisector/fix/evaluation.py): a fixer, a summary,
``kept``, ``saved``, ``size``, ``removes_behaviour`` and the upfront and budget figures. Here, below
the engine and the patches, so the engine, the patches and the reports choose alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

UPFRONT_FLOOR = 5e6  # below the RSS noise band an upfront cost is not a cost worth weighing


def costs_more_than_it_saves(e: Any) -> bool:
    """A fix that holds more from the start than the growth it prevents over the declared range
    (a warm-up's arena at the largest input, for a model that rarely sees it): not chosen by default.
    Judged against a budget (the culprit's peak was over it): a fix that leaves the peak over it."""
    headroom = getattr(e, "headroom_bytes", None)
    if headroom is not None:
        return headroom < 0
    up = getattr(e, "upfront_bytes", None)
    prevented = getattr(e, "prevented_bytes", None)
    return up is not None and prevented is not None and up > UPFRONT_FLOOR and up > prevented


def rank(results: Sequence[Any]) -> list[Any]:
    """Kept first: those that keep the code's behaviour before those that remove some (data other
    code reads), those worth their upfront memory (or, against a budget, that bring the peak under
    it) before those that are not, then by how far under the budget, by memory saved, then by the
    smallest change; then the rest as tried."""
    kept = sorted(
        (r for r in results if r.kept),
        key=lambda r: (
            bool(r.removes_behaviour),
            costs_more_than_it_saves(r),
            -(r.headroom_bytes or 0.0),
            -r.saved,
            r.size,
        ),
    )
    return kept + [r for r in results if not r.kept]


def choose(kept: Sequence[Any], pick: int | None = None, prefer: str | None = None) -> Any | None:
    """The kept fix a patch is made of: the one `prefer` names (a fixer name or words of its
    summary), else the `pick`-th (1-based), else the best ranked that keeps the code's behaviour
    and does not cost more up front than the growth it prevents. None when no kept fix is both:
    a patch that takes a feature away is never offered unasked (not_chosen says why, and the
    user can still take one by name or number)."""

    if prefer:
        for e in kept:
            if prefer in e.fixer or prefer.lower() in e.summary.lower():
                return e
    if pick is not None and 1 <= pick <= len(kept):
        return kept[pick - 1]
    return next((e for e in kept if not e.removes_behaviour and not costs_more_than_it_saves(e)), None)


def not_chosen(kept: Sequence[Any]) -> str:
    """Why choose() took none of these kept fixes by default (for the status's note)."""
    takes = [e for e in kept if e.removes_behaviour]
    costly = [e for e in kept if not e.removes_behaviour and costs_more_than_it_saves(e)]
    over = [e for e in costly if getattr(e, "headroom_bytes", None) is not None]
    costly = [e for e in costly if e not in over]
    parts = []
    if takes:
        parts.append(
            "only fixes that remove behaviour: " + "; ".join(f"{e.fixer} ({e.removes_behaviour})" for e in takes)
        )
    if costly:
        what = "the others cost" if takes else "every kept fix costs"
        parts.append(f"{what} more memory up front than the growth they prevent over the declared range")
    if over:
        parts.append("every kept fix leaves the projected peak over the budget")
    return ", and ".join(parts)


def best_fixes(report: Any, pick: int | None = None, prefer: str | None = None) -> list[Any]:
    """The chosen kept fix of every culprit that has one."""
    chosen = []
    for c in report.find.culprits:
        e = choose([e for e in report.for_culprit(c) if e.kept], pick, prefer)
        if e is not None:
            chosen.append(e)
    return chosen
