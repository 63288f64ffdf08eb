"""What the fix engine reports: each candidate's evaluation (measured, kept or dropped, and why)
and the fix report of one model (its find report and every evaluation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bisector.find.localise import Culprit, FindReport
from bisector.fix.growth import growth
from bisector.fixers.base import UNSUPPORTED_OP  # stdlib only: a stage the exporter could not get through
from bisector.judge.choice import costs_more_than_it_saves
from bisector.judge.verdict import CLEAN, LEAK
from bisector.lab.timings import PhaseTimes


@dataclass(frozen=True)
class Evaluation:
    """What one candidate (or a combination) did, measured."""

    fixers: tuple[str, ...]
    summary: str
    region: str
    stage: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]  # the region alone
    after_model: Mapping[str, Any]  # the whole model in the same stage
    equivalent: bool | None
    max_abs_diff: float | None
    max_rel_diff: float | None
    kept: bool
    reason: str
    changes_outputs: bool
    size: int
    edits: tuple[Any, ...] = ()
    probe: Mapping[str, Any] = field(default_factory=dict)
    saved: float = 0.0  # bytes (or objects) per call or per new shape, as before - after
    upfront_bytes: float | None = None  # memory the fix holds from the start (a warm-up's arena)
    removes_behaviour: str = ""  # what the fix takes away that other code reads ("" keeps behaviour)
    # The whole model's largest RSS over the declared range, without and with the fix, and the
    # growth over the range the fix prevents (what its upfront cost is weighed against).
    steady_before_bytes: float | None = None
    steady_after_bytes: float | None = None
    prevented_bytes: float | None = None
    bound: int | None = None  # the entries the fix lets the container keep (judged past them)
    # With --budget, for a culprit whose stage's projected peak is over it: the budget, and the
    # whole model's projected peak at the largest declared input with the fix (ceiling.py). The fix
    # is then judged by how far under the budget it brings the peak (costs_more_than_it_saves, rank).
    budget_bytes: float | None = None
    peak_after_bytes: float | None = None

    @property
    def headroom_bytes(self) -> float | None:
        """How far under the budget the fix brings the peak (negative: still over it)."""
        if self.budget_bytes is None or self.peak_after_bytes is None:
            return None
        return self.budget_bytes - self.peak_after_bytes

    @property
    def fixer(self) -> str:
        return "+".join(self.fixers)

    def to_json(self) -> dict[str, Any]:
        return {
            "fixer": self.fixer,
            "summary": self.summary,
            "region": self.region,
            "stage": self.stage,
            "before_bytes_per_call": self.before.get("growth_bytes_per_call"),
            "after_bytes_per_call": self.after.get("growth_bytes_per_call"),
            "before_bytes_per_new_shape": self.before.get("growth_bytes_per_new_shape"),
            "after_bytes_per_new_shape": self.after.get("growth_bytes_per_new_shape"),
            "before_objects_per_call": self.before.get("objects_per_call"),
            "after_objects_per_call": self.after.get("objects_per_call"),
            "before_objects_per_new_shape": self.before.get("objects_per_new_shape"),
            "after_objects_per_new_shape": self.after.get("objects_per_new_shape"),
            "judged_on": growth(self.before, self.before.get("kind", LEAK))[1],
            "before_kind": self.before.get("kind"),
            "after_kind": self.after.get("kind"),
            "after_model_kind": self.after_model.get("kind"),
            "equivalent": self.equivalent,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "changes_outputs": self.changes_outputs,
            "kept": self.kept,
            "reason": self.reason,
            "size": self.size,
            "upfront_bytes": self.upfront_bytes,
            "removes_behaviour": self.removes_behaviour,
            "steady_before_bytes": self.steady_before_bytes,
            "steady_after_bytes": self.steady_after_bytes,
            "prevented_bytes": self.prevented_bytes,
            "bound": self.bound,
            "costs_more_than_it_saves": costs_more_than_it_saves(self),
            "budget_bytes": self.budget_bytes,
            "peak_after_bytes": self.peak_after_bytes,
            "headroom_bytes": self.headroom_bytes,
            "probe": dict(self.probe),
            "edits": [{"path": e.path, "summary": e.summary} for e in self.edits],
        }


@dataclass(frozen=True)
class FixReport:
    find: FindReport
    evaluations: tuple[Evaluation, ...]
    probes: int
    wall_s: float
    timings: PhaseTimes = PhaseTimes()  # find's and the fixes' phases (bisector/lab/timings.py)

    @property
    def kept(self) -> list[Evaluation]:
        return [e for e in self.evaluations if e.kept]

    def fixed(self, c: Culprit) -> bool:
        """A kept fix for the culprit; for a stage that could not run, one with which it also
        measures clean (running but leaking is the next thing to fix, not fixed)."""
        kept = [e for e in self.for_culprit(c) if e.kept]
        if c.kind == UNSUPPORTED_OP:
            return any(e.after_model.get("kind") == CLEAN for e in kept)
        return bool(kept)

    def for_culprit(self, c: Culprit) -> list[Evaluation]:
        return [e for e in self.evaluations if e.region == c.region and e.stage == c.stage]

    def to_json(self) -> dict[str, Any]:
        data = self.find.to_json()
        data["fixes"] = [e.to_json() for e in self.evaluations]
        data["probes"] = self.find.probes + self.probes
        data["wall_s"] = round(self.find.wall_s + self.wall_s, 2)
        data["timings"] = self.timings.to_json()
        return data
