"""What a measurement is asked to do (MeasureOptions) and what it found (StageResult, MeasureReport)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bisector.judge.ceiling import stage_ceilings
from bisector.judge.search import Outcome
from bisector.judge.signals import COUNT_METRICS, GROWS
from bisector.judge.verdict import LEAK, Bands, Kind, Verdict, worst
from bisector.model.curve import MemoryCurve
from bisector.model.figures import Figures
from bisector.model.schedule import PROFILES, ScheduleProfile
from bisector.model.spec import InputPlan, ModelSpec
from bisector.probe.types import STAGES, ProbeOptions, ProbeResult

# The default targets: what bench/sensitivity.py holds with 0 false leaks on the clean zoo within
# the default stage budget on 2 cores, loaded as the suite loads them (docs/floor.md). On a quiet
# machine 512 B held (0 false leaks in 130 stage runs, a clean GPT-2 block's wander of up to +574
# B/call measured again on a second schedule); under load that wander reached +1.0 KB/call (the
# suite's two workers and a bench on two cores), so 1 KB is not held there and the defaults stay at
# 2 KB. `--floor 512B` reaches below. Exports cost seconds each: 4 passes resolve ~3-13 KB.
FLOOR_TARGETS = {"eager": 2048.0, "inference": 2048.0, "export": 16384.0}
CRASHED = Kind.CRASHED  # a stage whose model probe died, hung or hit the memory cap
FAILED = Kind.FAILED  # a stage whose model probe raised (the model cannot run or export)


@dataclass(frozen=True)
class MeasureOptions:
    stages: tuple[str, ...] = STAGES
    probe: ProbeOptions = ProbeOptions()
    seed: int = 0
    bands: Bands = Bands()
    metric: str = "rss"
    retries: int = 2
    jobs: int | None = None
    fresh: bool = False
    timeout_s: float = 300.0
    mem_cap: int | None = None
    cache_dir: str | None = None  # None: the user cache folder; "" disables the control cache
    profiles: dict[str, ScheduleProfile] = field(default_factory=lambda: dict(PROFILES))
    # The detection floor a clean verdict must reach (bytes per call or export), else more repeat
    # calls are run, within budget_s per stage; past it the stage is inconclusive at the floor it
    # reached. Only the exact heap meter can reach these; RSS-only judging states its floor.
    floor_targets: dict[str, float] = field(default_factory=lambda: dict(FLOOR_TARGETS))
    budget_s: float = 240.0


@dataclass(frozen=True)
class StageResult:
    stage: str
    kind: Kind  # a verdict kind, or failed / crashed
    verdict: Verdict | None = None
    curve: MemoryCurve | None = None
    control: MemoryCurve | None = None
    failure: ProbeResult | None = None
    control_failure: ProbeResult | None = None
    probes: int = 0
    attempts: int = 1

    def outcome(self) -> Outcome:
        """The whole model's result in the search's terms (kind and figures); needs a verdict."""
        assert self.verdict is not None and self.curve is not None
        return outcome_of(self.verdict, self.curve, self.control)

    def to_json(self, samples: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"verdict": self.kind}
        if self.verdict is not None:
            out.update(self.verdict.to_json())
            out["verdict"] = self.kind
        else:
            for key in (
                "growth_bytes_per_call",
                "growth_bytes_per_new_shape",
                "baseline_bytes_per_call",
                "baseline_bytes_per_new_shape",
                "noise_bytes",
            ):
                out[key] = None
        if self.failure is not None:
            out["error"] = self.failure.to_json()
        if self.control_failure is not None:
            out["control_error"] = self.control_failure.to_json()
        out["attempts"] = self.attempts
        out["probes"] = self.probes
        if self.curve is not None:
            out["samples"] = [s.to_json() for s in self.curve.samples] if samples else []
            out["type_growth"] = {k: dict(v) for k, v in self.curve.type_growth.items()}
            out["meta"] = dict(self.curve.meta)
        else:
            out["samples"] = []
        if self.control is not None:
            out["control_samples"] = [s.to_json() for s in self.control.samples] if samples else []
        return out


@dataclass(frozen=True)
class MeasureReport:
    model: ModelSpec
    plan: InputPlan
    stages: dict[str, StageResult]
    probes: int
    wall_s: float
    options: MeasureOptions
    reused: int = 0  # probes (model and control) taken from an earlier run's cache, not run
    reused_controls: int = 0  # of those, the controls (reused_probes counts the model's alone: schema 1)

    @property
    def verdict(self) -> str:
        return worst([r.kind for r in self.stages.values()])

    def to_json(self, samples: bool = True) -> dict[str, Any]:
        return {
            "spec": self.model.label,
            "model": self.model.to_json(),
            "inputs": self.plan.describe(),
            "dims": {k: list(v) for k, v in self.plan.dims.items()},
            "verdict": self.verdict,
            "stages": {name: _with_ceiling(r.to_json(samples), r, self.plan.dims) for name, r in self.stages.items()},
            "bands": self.options.bands.to_json(),
            "probes": self.probes,
            "reused_probes": self.reused - self.reused_controls,
            "reused_controls": self.reused_controls,
            "wall_s": round(self.wall_s, 2),
        }


def _with_ceiling(data: dict[str, Any], r: StageResult, dims: Any) -> dict[str, Any]:
    """Bounded shape-growth's ceiling (ceiling.py): the growth over the declared range and the
    projected peak at the largest declared input, RSS and GPU where measured."""
    found = stage_ceilings(r, dims)
    if found:
        data["ceiling"] = [c.to_json() for c in found]
    return data


def stage_order(stages: tuple[str, ...]) -> list[str]:
    """Exports are the slow probes: start them first so the cheap ones fill in around them."""
    rank = {"export": 0, "inference": 1, "eager": 2}
    return sorted(stages, key=lambda s: rank.get(s, 3))


def outcome_of(verdict: Verdict, curve: MemoryCurve, control: MemoryCurve | None) -> Outcome:
    grown_bytes = any(
        s.state == GROWS and s.metric not in COUNT_METRICS for s in verdict.signals if s.phase in ("repeat", "novel")
    )
    phase = "repeat" if verdict.kind == LEAK else "novel"
    grown = curve.type_growth.get(phase) or {}
    ctrl = (control.type_growth.get(phase) or {}) if control else {}
    top = {k: n - ctrl.get(k, 0) for k, n in grown.items() if n - ctrl.get(k, 0) > 0}
    figures = Figures(
        growth_bytes_per_call=verdict.growth_bytes_per_call,
        growth_bytes_per_new_shape=verdict.growth_bytes_per_new_shape,
        objects_per_call=verdict.objects_per_call,
        objects_per_new_shape=verdict.objects_per_new_shape,
        bounded=verdict.bounded,
        noise_bytes=verdict.noise_bytes,
        growth_metric=verdict.growth_metric,
        decided_by=verdict.decided_by,
        floor_bytes_per_call=verdict.floor_bytes_per_call,
        error_bytes_per_call=verdict.error_bytes_per_call,
        owners=dict(verdict.owners) if verdict.owners else None,
        exact=not grown_bytes,
        repeat_steps=_steps(verdict, "repeat"),
        novel_steps=_steps(verdict, "novel"),
        top_types=dict(sorted(top.items(), key=lambda kv: -kv[1])[:4]),
        # Memory in place before the measured calls (setup, and any warm-up a fix adds).
        rss_before_loop=curve.meta.get("rss_before_loop"),
        control_rss_before_loop=control.meta.get("rss_before_loop") if control is not None else None,
        # The largest RSS over the whole schedule: the steady state a fix's trade-off is shown against.
        rss_peak=max(curve.series("rss"), default=None),
        # The GPU working set at its largest (NVML): what a gpu_mem_limit can be sized from.
        peak_gpu_bytes=max(curve.series("gpu"), default=None),
        # The curves themselves, for the HTML report's per-culprit and before/after charts
        # (Culprit.to_json and Evaluation.to_json pick their keys, so --json does not grow).
        samples=[s.to_json() for s in curve.samples],
        control_samples=[s.to_json() for s in control.samples] if control is not None else [],
    )
    return Outcome(verdict.kind, figures, "; ".join(verdict.reasons))


def _steps(verdict: Verdict, phase: str) -> int:
    return next((s.steps for s in verdict.signals if s.metric == verdict.metric and s.phase == phase), 0)
