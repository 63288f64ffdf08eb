"""Recorded region inputs on disk: one file per input shape (a schedule step's dims).

The capture probe runs the whole model once per distinct shape with forward pre-hooks on every
module and saves, per shape, each region's calls (args and kwargs, tensors and plain values, all
calls when a module runs several times per forward). A shape the region probes run several times
is recorded with as many distinct inputs (up to MAX_VARIANTS, within a size and time budget), kept
in the same file. Region probes then replay exactly what each region received, a new variant at
each run of a shape. Plain data here; the torch side is bisector/probe/regions.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from bisector.model.schedule import Schedule, ScheduleProfile, Step


def dims_key(dims: Mapping[str, int]) -> str:
    return hashlib.sha1(json.dumps(sorted(dims.items())).encode()).hexdigest()[:16]


def input_seed_index(dims: Mapping[str, int]) -> int:
    """The step index the model's inputs for a shape are generated with (the same in every probe)."""
    return int(dims_key(dims)[:8], 16)


def capture_file(folder: str | Path, dims: Mapping[str, int]) -> Path:
    return Path(folder) / f"{dims_key(dims)}.pt"


def distinct_dims(schedules: Iterable[Schedule]) -> list[dict[str, int]]:
    seen: dict[str, dict[str, int]] = {}
    for schedule in schedules:
        for step in schedule.steps:
            seen.setdefault(dims_key(step.dims), dict(step.dims))
    return list(seen.values())


def missing(folder: str | Path, dims_list: Iterable[Mapping[str, int]]) -> list[dict[str, int]]:
    return [dict(d) for d in dims_list if not capture_file(folder, d).exists()]


MAX_VARIANTS = 12  # distinct recorded inputs per shape, at most
VARIANTS_BYTES = 8 << 20  # past this many bytes of one shape's recordings, no further variant is recorded
VARIANTS_S = 20.0  # nor past this many seconds of recording variants in one capture probe (a slow forward)


def occurrences(schedules: Iterable[Schedule]) -> dict[str, int]:
    """Per shape (its dims_key), the most times one of these schedules runs it."""
    most: dict[str, int] = {}
    for schedule in schedules:
        counts: dict[str, int] = {}
        for step in schedule.steps:
            k = dims_key(step.dims)
            counts[k] = counts.get(k, 0) + 1
        for k, n in counts.items():
            most[k] = max(most.get(k, 0), n)
    return most


def capture_schedule(dims_list: list[dict[str, int]], seed: int, counts: Mapping[str, int] | None = None) -> Schedule:
    """A schedule whose steps are the shapes to capture (the capture probe's work list): a shape the
    region probes run n times appears min(n, MAX_VARIANTS) times, one distinct input each. The
    whole model sees new input values at every step; a region replaying one recorded input per
    shape would never fill a cache keyed by content (a hash of the input's bytes), so each of
    its runs of a shape replays another of the recorded variants."""
    steps = []
    for d in dims_list:
        n = min(MAX_VARIANTS, max(1, (counts or {}).get(dims_key(d), 1)))
        steps += [Step("capture", d)] * n
    return Schedule(steps=tuple(steps), seed=seed, profile=ScheduleProfile())


def variant_indices(schedule: Schedule) -> list[int]:
    """Per step, how many earlier steps ran the same shape: the recorded variant a region replays
    there (modulo the variants recorded)."""
    seen: dict[str, int] = {}
    out = []
    for step in schedule.steps:
        k = dims_key(step.dims)
        out.append(seen.get(k, 0))
        seen[k] = out[-1] + 1
    return out
