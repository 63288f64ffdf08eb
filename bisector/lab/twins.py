"""The extra probes a stage's verdict may ask for, and what their results are read as: the traced
twins that say who owns the growth (owners.py), the retention probe's schedule, and the control
scaled to a group of regions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from bisector.model.curve import MemoryCurve, Sample
from bisector.model.schedule import Schedule, ScheduleProfile, Step
from bisector.probe.types import ProbeOk, ProbeRequest, ProbeResult

# Frames a traced probe records per allocation: one in export, where torch's exporter allocates
# from deep stacks and each frame slows every allocation; enough elsewhere to look past the
# standard library to the caller's file.
OWNER_FRAMES = {"export": 1, "eager": 8, "inference": 8}


def scale_control(curve: MemoryCurve, k: int) -> MemoryCurve:
    """The control as if run k times per step: each metric's change from its first reading times k."""
    if k == 1 or not curve.samples:
        return curve
    first = curve.samples[0].values
    samples = tuple(
        Sample(s.phase, s.dims, {m: first[m] + k * (v - first[m]) if m in first else v for m, v in s.values.items()})
        for s in curve.samples
    )
    return MemoryCurve(samples=samples, type_growth=curve.type_growth, meta=curve.meta)


def scaled_owners(owners: Mapping[str, Any] | None, k: int) -> Mapping[str, Any] | None:
    """A traced control's per-call figures as if run k times per step, like scale_control."""
    if not owners or k == 1 or "repeat" not in owners:
        return owners
    rep = dict(owners["repeat"])
    rep["python_malloc"] = float(rep.get("python_malloc") or 0.0) * k
    return {**owners, "repeat": rep}


def owners_of(result: ProbeResult) -> dict[str, Any] | None:
    """What a traced probe found (None when it did not run to the end)."""
    return result.curve.meta.get("owners") if isinstance(result, ProbeOk) else None


def owners_profile(profile: ScheduleProfile, stage: str) -> ScheduleProfile:
    """The traced probe's schedule: the stage's warm-up, one traced pass of its own warm-up, then
    the passes split by owner: one in export (a traced export is ~5x slower), two elsewhere."""
    return replace(profile, repeat_passes=2 if stage == "export" else 3, novel=0, within=0)


def build_schedule_like(schedule: Schedule, profile: ScheduleProfile) -> Schedule:
    """A schedule over the same shapes as another, with another profile (same seed, same ranges)."""
    repeat = [dict(s.dims) for s in schedule.steps if s.phase == "repeat"]
    warm = [dict(s.dims) for s in schedule.steps if s.phase == "warmup"]
    shapes = list({tuple(sorted(d.items())): d for d in repeat}.values())
    steps = [Step("warmup", d) for d in warm]
    for _ in range(profile.repeat_passes):
        steps += [Step("repeat", d) for d in shapes]
    return Schedule(steps=tuple(steps), seed=schedule.seed, profile=profile)


def traced(request: ProbeRequest, stage: str) -> ProbeRequest:
    """The traced twin of a model probe (owners.py): same model, regions and inputs."""
    schedule = build_schedule_like(request.schedule, owners_profile(request.schedule.profile, stage))
    options = replace(request.options, owners=OWNER_FRAMES.get(stage, 8))
    return request.with_(options=options, schedule=schedule, label=f"{request.label} owners")


def retention_schedule(schedule: Schedule) -> Schedule:
    """A retention probe's schedule: the stage's warm-up, three passes over the repeated shapes
    (the first one the walker's own warm-up), then the novel shapes; no within phase."""
    steps = [s for s in schedule.steps if s.phase == "warmup"]
    shapes = list({s.key(): s for s in schedule.steps if s.phase == "repeat"}.values())
    for _ in range(3):
        steps += [Step("repeat", dict(s.dims)) for s in shapes]
    steps += [s for s in schedule.steps if s.phase == "novel"]
    return Schedule(steps=tuple(steps), seed=schedule.seed, profile=schedule.profile)
