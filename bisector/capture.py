"""Recorded region inputs on disk: one file per input shape (a schedule step's dims).

The capture probe runs the whole model once per distinct shape with forward pre-hooks on every
module and saves, per shape, each region's calls (args and kwargs, tensors and plain values, all
calls when a module runs several times per forward). Region probes then replay exactly what each
region received. Plain data here; the torch side is bisector/probe/regions.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from bisector.schedule import Schedule, ScheduleProfile, Step


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


def capture_schedule(dims_list: list[dict[str, int]], seed: int) -> Schedule:
    """A schedule whose steps are the shapes to capture (the capture probe's work list)."""

    return Schedule(steps=tuple(Step("capture", d) for d in dims_list), seed=seed, profile=ScheduleProfile())
