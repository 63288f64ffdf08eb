"""What the fix engine measures for a culprit: each candidate a fixer proposes, and, when none is
enough alone, pairs of them.

A Trial is one candidate or a pair, as the engine measures it: the fixers it comes from, its probe
options and source edits, and what the choice weighs (its size, whether it changes outputs or
removes behaviour, the bound it declares).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bisector.fixers import FixTarget, addresses
from bisector.judge.verdict import CLEAN
from bisector.model.kinds import Kind
from bisector.probe.types import merge_overrides

MAX_PAIRS = 10

merge_probe = merge_overrides  # kept fixes' probe options, merged as a probe merges them


@dataclass(frozen=True)
class Trial:
    """One candidate (or a pair of them) to measure."""

    fixers: tuple[str, ...]
    summary: str
    probe: Mapping[str, Any]
    edits: tuple[Any, ...]
    changes_outputs: bool
    size: int
    removes_behaviour: str = ""
    bound: int | None = None  # the entries the fix lets the container keep (judged past them)

    @classmethod
    def of(cls, cand: Any) -> Trial:
        """A fixer's candidate, as proposed."""
        return cls(
            (cand.fixer,),
            cand.summary,
            cand.probe,
            cand.edits,
            cand.changes_outputs,
            cand.size,
            cand.removes_behaviour,
            getattr(cand, "bound", None),  # a plugin's Candidate may predate the field
        )

    @classmethod
    def pair(cls, a: Any, b: Any) -> Trial:
        """Two candidates applied together (a bound is not carried over: a pair is judged as a whole)."""
        return cls(
            (a.fixer, b.fixer),
            f"{a.summary}; and {b.summary}",
            merge_probe(a.probe, b.probe),
            a.edits + b.edits,
            a.changes_outputs or b.changes_outputs,
            a.size + b.size,
            "; ".join(x for x in (a.removes_behaviour, b.removes_behaviour) if x),
        )


def proposed(fixers: Sequence[Any], target: FixTarget) -> list[Any]:
    """Every candidate the fixers that address this target propose for it."""
    return [cand for fx in fixers if addresses(fx, target) for cand in fx.propose(target)]


def pairs(
    before: float, candidates: Sequence[Any], results: Sequence[Any], remaining: Callable[[Any], float]
) -> list[tuple[Any, Any]]:
    """When no candidate is enough alone: the two that helped most (least growth remaining, under
    80% of before), each paired with every other candidate that ran (a setting that does nothing
    alone can finish another's job, as the memory pattern off does for a warm-up at the largest
    input). Two edits of one file do not compose; at most MAX_PAIRS."""
    ran = [
        (r, cand)
        for r, cand in zip(results, candidates)
        if r.after.get("kind") not in (None, Kind.FAILED, Kind.CRASHED)
    ]
    helped = sorted((rc for rc in ran if remaining(rc[0]) < 0.8 * before), key=lambda rc: remaining(rc[0]))[:2]
    out: list[tuple[Any, Any]] = []
    for _, a in helped:
        for _, b in ran:
            if b is a or any({a.summary, b.summary} == {x.summary, y.summary} for x, y in out):
                continue
            if any(e1.path == e2.path for e1 in a.edits for e2 in b.edits):
                continue  # two edits of one file do not compose
            out.append((a, b))
    return out[:MAX_PAIRS]


def any_clean(results: Sequence[Any]) -> bool:
    """A kept candidate that made the culprit's region clean: no pairs are needed then."""
    return any(r.kept and r.after.get("kind") == CLEAN for r in results)
