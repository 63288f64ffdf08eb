"""Seeded, reproducible input-shape schedules.

A schedule is a list of steps; each step assigns a size to every symbol and belongs to a phase:

- ``warmup``  the repeated shapes, seen once (or more) and then discarded: first-call costs,
  lazily built caches and allocator pools land here;
- ``repeat``  the same small set of shapes, cycled several times. Memory that keeps growing here
  grows per *call* (a leak): a per-shape cache or an arena has already seen every shape;
- ``novel``   shapes never seen before, each larger than all before it (ascending to the top of
  each range). Growth here beyond the per-call rate is growth per *new shape*. (In eager the
  largest shape is run once in warm-up, see ScheduleProfile.warm_largest, so there the novel
  shapes are new but not new maxima);
- ``within``  more unseen shapes, none larger than the largest already seen. Growth that stops
  here is bounded by the largest shape (an arena); growth that goes on is unbounded (a cache
  keyed by shape).

The repeated shapes come from the lower half of each range so that the novel phase can climb
above them; the same seed always gives the same schedule.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

PHASES = ("warmup", "repeat", "novel", "within")


@dataclass(frozen=True)
class Step:
    phase: str
    dims: Mapping[str, int]

    def key(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self.dims.items()))

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "dims": dict(self.dims)}


SHAPE_SCALE = 4  # the most a rerun multiplies the new shapes (ScheduleProfile.scaled)


@dataclass(frozen=True)
class ScheduleProfile:
    """How many steps of each phase; a stage picks one to suit its cost per call."""

    shapes: int = 4  # distinct shapes in the repeated set
    warmup_passes: int = 2
    repeat_passes: int = 4
    novel: int = 8
    within: int = 6
    # Run the largest shape of every range once in warm-up: memory held for the largest shape so
    # far (the C allocator's high-water mark, oneDNN's conv workspaces) is then paid before the
    # measured phases, and growth on new shapes is per-shape state (a cache). Eager only: in
    # ONNX Runtime, growth held for the largest shape (its arena) is what users need to see.
    warm_largest: bool = False

    def scaled(self, factor: int) -> ScheduleProfile:
        """More iterations for a probe that came back inconclusive, or whose floor is above its
        target. New shapes scale up to 4x only: a floor chase (lab.Lab.stage) may ask for 50x the
        passes, and the floor per call is the repeated shapes' alone."""
        shapes = min(factor, SHAPE_SCALE)
        return replace(
            self,
            repeat_passes=self.repeat_passes * factor,
            novel=self.novel * shapes,
            within=self.within * shapes,
        )


# Eager calls and ONNX Runtime runs are cheap; exports cost ~1-3 s each with the default
# exporter, so the export profile keeps just enough for the per-call rules: one shape repeated
# (four deltas, each a pass for the heap rule), two new shapes and one within.
PROFILES: dict[str, ScheduleProfile] = {
    "eager": ScheduleProfile(shapes=4, warmup_passes=2, repeat_passes=4, novel=8, within=6, warm_largest=True),
    "export": ScheduleProfile(shapes=1, warmup_passes=1, repeat_passes=4, novel=2, within=1),
    "inference": ScheduleProfile(shapes=4, warmup_passes=2, repeat_passes=5, novel=10, within=8),
}


@dataclass(frozen=True)
class Schedule:
    steps: tuple[Step, ...]
    seed: int
    profile: ScheduleProfile

    def phase(self, name: str) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.phase == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "profile": self.profile.__dict__,
            "steps": [s.to_json() for s in self.steps],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schedule:
        return cls(
            steps=tuple(Step(phase=s["phase"], dims=dict(s["dims"])) for s in data["steps"]),
            seed=int(data["seed"]),
            profile=ScheduleProfile(**data["profile"]),
        )


def build_schedule(ranges: Mapping[str, tuple[int, int]], profile: ScheduleProfile, seed: int = 0) -> Schedule:
    """The steps for these symbol ranges. Fixed sizes (MIN == MAX) give only warm-up and repeats."""
    rng = random.Random(seed)
    syms = sorted(ranges)
    fixed = {s: lo for s, (lo, hi) in ranges.items() if lo == hi}
    free = [s for s in syms if ranges[s][0] != ranges[s][1]]

    repeat_set = _lower_half_shapes(ranges, free, fixed, profile.shapes, rng)
    seen = {tuple(sorted(d.items())) for d in repeat_set}
    largest = {**fixed, **{s: ranges[s][1] for s in free}}
    warm_extra = [largest] if profile.warm_largest and free else []
    seen.update(tuple(sorted(d.items())) for d in warm_extra)
    novel = _ascending_shapes(ranges, free, fixed, repeat_set, profile.novel, seen)
    seen.update(tuple(sorted(d.items())) for d in novel)
    within = _unseen_shapes(ranges, free, fixed, profile.within, seen, rng)

    steps: list[Step] = [Step("warmup", d) for d in warm_extra]
    for _ in range(profile.warmup_passes):
        steps += [Step("warmup", d) for d in repeat_set]
    for _ in range(profile.repeat_passes):
        steps += [Step("repeat", d) for d in repeat_set]
    steps += [Step("novel", d) for d in novel]
    steps += [Step("within", d) for d in within]
    return Schedule(steps=tuple(steps), seed=seed, profile=profile)


def _lower_half_shapes(ranges, free, fixed, count, rng) -> list[dict[str, int]]:
    if not free:
        return [dict(fixed)]
    shapes: list[dict[str, int]] = []
    keys: set[tuple] = set()
    for _ in range(count * 20):
        d = dict(fixed)
        for s in free:
            lo, hi = ranges[s]
            d[s] = rng.randint(lo, max(lo, lo + (hi - lo) // 2))
        k = tuple(sorted(d.items()))
        if k not in keys:
            keys.add(k)
            shapes.append(d)
        if len(shapes) == count:
            break
    return shapes


def _ascending_shapes(ranges, free, fixed, repeat_set, count, seen) -> list[dict[str, int]]:
    """Each shape at least as large as the last in every dim and larger in one: new maxima."""
    if not free or count <= 0:
        return []
    start = {s: max(d[s] for d in repeat_set) for s in free}
    shapes: list[dict[str, int]] = []
    prev = dict(start)
    for i in range(1, count + 1):
        d = dict(fixed)
        for s in free:
            hi = ranges[s][1]
            d[s] = max(prev[s], start[s] + round((hi - start[s]) * i / count))
        if all(d[s] == prev[s] for s in free):
            continue  # range too narrow for this many distinct steps
        k = tuple(sorted(d.items()))
        if k in seen:
            continue
        seen.add(k)
        shapes.append(d)
        prev = {s: d[s] for s in free}
    return shapes


def _unseen_shapes(ranges, free, fixed, count, seen, rng) -> list[dict[str, int]]:
    if not free or count <= 0:
        return []
    shapes: list[dict[str, int]] = []
    for _ in range(count * 50):
        d = dict(fixed)
        for s in free:
            lo, hi = ranges[s]
            d[s] = rng.randint(lo, hi)
        k = tuple(sorted(d.items()))
        if k not in seen:
            seen.add(k)
            shapes.append(d)
        if len(shapes) == count:
            break
    return shapes


def warmed(
    profiles: Mapping[str, ScheduleProfile], ranges: Mapping[str, tuple[int, int]], calls: int, seed: int = 0
) -> dict[str, ScheduleProfile]:
    """These profiles with warm-ups of at least `calls` calls of the repeated shapes: a container a
    fix bounds to N entries (a list trimmed to N, a tensor kept to its last N rows) fills during the
    warm-up, so the repeat phase sees it full and judges the bound, not the filling."""
    out = dict(profiles)
    for stage, profile in profiles.items():
        shapes = len({s.key() for s in build_schedule(ranges, profile, seed).phase("repeat")}) or 1
        out[stage] = replace(profile, warmup_passes=max(profile.warmup_passes, -(-calls // shapes)))
    return out


def describe(schedule: Schedule) -> str:
    counts = {p: len(schedule.phase(p)) for p in PHASES}
    return ", ".join(f"{n} {p}" for p, n in counts.items() if n)
