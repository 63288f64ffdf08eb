"""One model's result in a repair run, and the run's summary: the data `<out>/<name>.json`,
summary.json and the Ray tasks carry, rebuilt from their JSON in one place (`ModelResult.from_json`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bisector.common.units import format_bytes
from bisector.judge.ceiling import Ceiling, over_budget
from bisector.judge.ceiling import describe as describe_ceilings
from bisector.pipeline.run import Status
from bisector.repairs.markdown import summary_table

# A model's status in the summary: the pipeline's, where "unproven" reads as clean (the summary's
# verdict and stages columns say which stage was inconclusive).
CLEAN, FIXED, UNFIXED, ERROR = Status.CLEAN.value, Status.FIXED.value, Status.UNFIXED.value, Status.ERROR.value


@dataclass(frozen=True)
class ModelResult:
    name: str
    spec: str
    status: str  # clean | fixed | unfixed | error
    verdict: str = ""
    culprits: tuple[Mapping[str, Any], ...] = ()
    kept: tuple[Mapping[str, Any], ...] = ()
    patch: str | None = None
    error: str = ""
    wall_s: float = 0.0
    probes: int = 0
    resumed: bool = False
    stages: Mapping[str, str] = field(default_factory=dict)  # stage -> verdict
    patches: tuple[str, ...] = ()  # the per-file patches that hold this model's edits
    check: str = ""  # passed | failed: ... | not run against your script | no patch
    # Stages that could not run, each with its one-line error, beside the status of the others.
    stage_errors: Mapping[str, str] = field(default_factory=dict)
    # Bounded shape-growth's ceiling per stage (ceiling.Ceiling.to_json), and the budget judged.
    ceilings: Mapping[str, Any] = field(default_factory=dict)
    budget: float | None = None
    timings: Mapping[str, Any] = field(default_factory=dict)  # PhaseTimes.to_json(): where the wall went

    @classmethod
    def failed(cls, entry: Any, error: str, wall_s: float = 0.0) -> ModelResult:
        """The error row of a model that could not be repaired (its entry: a manifest.ModelEntry)."""
        return cls(entry.name, entry.label or entry.spec, ERROR, error=error, wall_s=wall_s)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelResult:
        """The result as `to_json` wrote it (a kept `<name>.json`, a summary row, a Ray task's answer).
        A key this version does not know is a TypeError: the caller reads that as no result."""
        return cls(
            **{
                **data,
                "culprits": tuple(data["culprits"]),
                "kept": tuple(data["kept"]),
                "patches": tuple(data.get("patches") or ()),
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "status": self.status,
            "verdict": self.verdict,
            "culprits": list(self.culprits),
            "kept": list(self.kept),
            "patch": self.patch,
            "error": self.error,
            "wall_s": round(self.wall_s, 2),
            "probes": self.probes,
            "resumed": self.resumed,
            "stages": dict(self.stages),
            "patches": list(self.patches),
            "check": self.check,
            "stage_errors": dict(self.stage_errors),
            "ceilings": {k: list(v) for k, v in self.ceilings.items()},
            "budget": self.budget,
            "timings": dict(self.timings),
        }

    def stages_text(self) -> str:
        """The stages cell: each stage's verdict, bounded growth with its ceiling (and the budget)."""
        parts = []
        for stage, verdict in self.stages.items():
            found = [Ceiling(**c) for c in self.ceilings.get(stage) or ()]
            text = f"{stage} {verdict}"
            if found:
                over = over_budget(found, self.budget)
                budget = (
                    f", {'over' if over else 'within'} the budget {format_bytes(self.budget)}"
                    if self.budget is not None
                    else ""
                )
                text += f" (bounded: {describe_ceilings(found)}{budget})"
            parts.append(text)
        return ", ".join(parts) or "-"


@dataclass(frozen=True)
class RepairSummary:
    results: tuple[ModelResult, ...]
    out: str
    wall_s: float
    counts: Mapping[str, int] = field(default_factory=dict)
    # Seconds per phase over every model, and the project's check command over all the patches.
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        statuses = {r.status for r in self.results}
        if ERROR in statuses:
            return 2
        return 1 if UNFIXED in statuses else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "models": [r.to_json() for r in self.results],
            "out": self.out,
            "wall_s": round(self.wall_s, 2),
            "counts": dict(self.counts),
            "timings": {"totals": dict(self.timings)},
        }

    def markdown(self) -> str:
        return summary_table(self.results)


def count_statuses(results: Iterable[ModelResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts
