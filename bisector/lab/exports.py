"""One export of the whole model for every whole-model inference probe of a run that exports it
alike (the find verdict's retries, the fix candidates that change only how ONNX Runtime runs it).

Each inference probe used to export the model before its session runs: ~1-3 s of a ~2-4 s probe,
made again by every candidate of an ONNX Runtime option. An export-file probe writes the file once
per model, export settings and example inputs, in the probe pool's folder (gone when the pool
closes), and the inference probes load it. The controls and the regions' probes still export in
the probe (the control's curve is cached across runs; a region's module is its own export).

All whole-model inference probes of a run load the file alike, so the absolute levels a trade-off
compares (a warm-up's memory held up front against the growth it prevents) stay comparable:
none of them holds the exporter's memory, as a serving process does not.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from bisector.model.schedule import Schedule
from bisector.probe.export import export_step_index
from bisector.probe.types import ProbeKind, ProbeOk, ProbeRequest

if TYPE_CHECKING:
    from bisector.lab.stage import Lab

EXPORT_LIMIT = 4  # distinct step shapes that decide which dims the export makes dynamic


def export_key(lab: Lab, schedule: Schedule, source: str) -> str:
    """What decides the exported file: the model and its source, the inputs' plan, the export
    settings and device, and the example (the schedule's seed, its largest step and the first
    distinct shapes, from which the dynamic dims are found where the plan names no symbols)."""
    o = lab.options.probe
    ex = export_step_index(schedule)
    distinct: dict[tuple, dict[str, int]] = {}
    for step in schedule.steps:
        distinct.setdefault(step.key(), dict(step.dims))
    data = {
        "model": lab.model.to_json(),
        "source": source,
        "plan": lab.plan.to_json(),
        "export": [o.exporter, dict(o.export_kwargs), list(o.post_export), dict(o.env), o.device],
        "seed": schedule.seed,
        "example": [ex, dict(schedule.steps[ex].dims)],
        "shapes": list(distinct.values())[:EXPORT_LIMIT],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:20]


class SharedExports:
    """The run's shared export files, each made once: the first probe that needs one makes it in
    its own turn (an export-file probe), the others wait for it. Shared by a lab and the labs
    derived from it: candidates that export alike share one file."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[str, Future] = {}
        self._schedules: dict[str, Schedule] = {}

    def path(self, lab: Lab, schedule: Schedule) -> str:
        """Where the file for this lab's model and schedule lies once made; "" where none can be
        shared (a stand-in runner without a pool folder)."""
        folder = getattr(getattr(lab, "pool", None), "workdir", None)
        if folder is None:
            return ""
        path = str(Path(folder) / "exports" / export_key(lab, schedule, lab.source) / "model.onnx")
        with self._lock:
            self._schedules.setdefault(path, schedule)
        return path

    def ensure(self, lab: Lab, path: str) -> str:
        """The file at path, made by this call's thread when no one has made it yet: path, or ""
        when it cannot be (the export failed: the inference probe then exports itself, and says why)."""
        with self._lock:
            made = self._made.get(path)
            mine = made is None
            if made is None:
                made = self._made[path] = Future()
            schedule = self._schedules.get(path)
        if mine:
            ok = False
            try:
                if schedule is not None:
                    request = ProbeRequest(
                        lab.model,
                        lab.plan,
                        None,
                        schedule,
                        lab.options.probe,
                        label="inference export",
                        kind=ProbeKind.EXPORT_FILE,
                        exported=path,
                    )
                    ok = isinstance(lab.runner.run_now(request), ProbeOk) and Path(path).exists()
            finally:
                made.set_result(ok)
        return path if made.result() else ""
