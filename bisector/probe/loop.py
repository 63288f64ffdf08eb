"""The measured loop: every step of the schedule is one call of the stage, sampled after it.

Type counts are snapshotted at each phase change and, with ProbeOptions.tracemalloc, allocations
around the repeat phase; a traced probe (ProbeOptions.owners) splits the measured phases' growth by
owner (OwnerTracer).
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bisector.model.curve import METRICS, MemoryCurve, Sample
from bisector.model.schedule import Schedule, Step
from bisector.probe.meters import Meters, traced_growth, type_growth
from bisector.probe.targets import Target
from bisector.probe.types import ProbeOptions


@dataclass
class Context:
    schedule: Schedule
    targets: list[Target]
    meters: Meters
    options: ProbeOptions
    workdir: Path
    device: str = "cpu"
    meta: dict[str, Any] = field(default_factory=dict)
    owner_roots: list[str] = field(default_factory=list)  # the model's project folders (owners.py)
    model: Any = None  # the whole model: retention paths are named from its root
    stage: str = ""  # eager | export | inference (the native stacks' default depends on it)
    exported: str = ""  # inference: the ONNX file a shared export probe wrote for the whole model


def _type_snapshot() -> tuple[tuple[str, ...], tuple[int, ...]]:
    # Flat tuples of str and int are untracked by the next collection, so keeping these
    # snapshots does not add to the object counts being measured.
    counts = Meters.type_counts()
    names = tuple(counts)
    values = tuple(counts[n] for n in names)
    return names, values


def _settle() -> None:
    # A collection untracks one level of nested str/int tuples; three cover the snapshots'
    # nesting, so the next sample does not count them.
    import gc

    for _ in range(3):
        gc.collect()


def run_loop(ctx: Context, call: Callable[[int, Step], None]) -> MemoryCurve:
    steps = ctx.schedule.steps
    n = len(steps)
    cols = {m: array("d", [math.nan]) * n for m in METRICS}
    snaps: list[tuple[str, Any]] = []
    traced: list[Any] = []
    phase = None
    # What setup made (the model, an exported graph, a session) is frozen out of the counts and
    # out of every later collection; only what the calls leave behind is measured.
    import gc

    gc.collect()
    ctx.meters.watch_tensors()
    gc.freeze()
    ctx.meta["rss_before_loop"] = ctx.meters.proc.memory_info().rss  # what setup (and a warm-up) cost
    tracer = OwnerTracer(ctx, steps) if ctx.options.owners else None
    holder = retention_tracer(ctx, steps) if ctx.options.retention else None
    started = time.perf_counter()
    for i, step in enumerate(steps):
        if step.phase != phase:
            phase = step.phase
            if phase != "warmup":
                snaps.append((phase, _type_snapshot()))
                if phase == "repeat":
                    traced.append(ctx.meters.snapshot())
                _settle()
        if tracer is not None:
            tracer.before(i)
        if holder is not None:
            holder.before(i)
        call(i, step)
        vals = ctx.meters.sample()
        for k, v in vals.items():
            if v is not None:
                cols[k][i] = v
        del vals
        if tracer is not None:
            tracer.after(i)
        if holder is not None:
            holder.after(i)
        if i == n - 1 or steps[i + 1].phase != "repeat":
            if step.phase == "repeat":
                traced.append(ctx.meters.snapshot())
    snaps.append(("end", _type_snapshot()))
    loop_s = time.perf_counter() - started
    if tracer is not None:
        ctx.meta["owners"] = tracer.result()
    if holder is not None:
        ctx.meta["retention"] = holder.result()

    return _curve(ctx, cols, snaps, traced, loop_s)


def _curve(
    ctx: Context, cols: dict[str, array], snaps: list[tuple[str, Any]], traced: list[Any], loop_s: float
) -> MemoryCurve:
    """The loop's samples, each phase's object-type growth, and what the meters say of themselves."""
    from collections import Counter

    steps = ctx.schedule.steps
    samples = tuple(
        Sample(step.phase, dict(step.dims), {m: cols[m][i] for m in METRICS if not math.isnan(cols[m][i])})
        for i, step in enumerate(steps)
    )
    growth: dict[str, dict[str, int]] = {}
    for (name, (n0, v0)), (_, (n1, v1)) in zip(snaps, snaps[1:]):
        growth[name] = type_growth(Counter(dict(zip(n0, v0))), Counter(dict(zip(n1, v1))))
    meta = dict(ctx.meta)
    meta["loop_s"] = round(loop_s, 3)
    if ctx.meters.gpu_source:
        meta["gpu_source"] = ctx.meters.gpu_source
    meta["heap_meter"] = ctx.meters.heap_source or "unavailable"
    tensors = ctx.meters.tensors
    if tensors is not None and tensors.reads:
        # The exact floor of the tensor meter (one element of the smallest dtype seen), and its cost.
        meta["tensor_element_bytes"] = tensors.element_bytes or 1
        meta["tensor_meter_ms"] = round(1000 * tensors.seconds / tensors.reads, 3)
    if len(traced) == 2:
        meta["traced_top"] = traced_growth(traced[0], traced[1])
    return MemoryCurve(samples=samples, type_growth=growth, meta=meta)


class OwnerTracer:
    """tracemalloc over the measured phases of a traced probe (ProbeOptions.owners frames).

    Tracing starts before the first repeat call; that first pass is the tracer's own warm-up
    (what a traced call allocates once). Snapshots then bracket the rest of the repeat phase (per
    call) and the novel phase (per new shape). The heap meter is read around each snapshot so that
    the snapshot's own memory, held until the next one, is not counted as growth.
    """

    def __init__(self, ctx: Context, steps: tuple[Step, ...]) -> None:
        from bisector.judge.owners import Classifier, installed_own

        self.ctx = ctx
        self.steps = steps
        self.classifier = Classifier(ctx.owner_roots, installed_own())
        repeat = [i for i, s in enumerate(steps) if s.phase == "repeat"]
        novel = [i for i, s in enumerate(steps) if s.phase == "novel"]
        pass_len = max(1, len({steps[i].key() for i in repeat}))
        self.start_at = repeat[0] if repeat else None
        # (phase, first step whose call is inside the span, last step): spans of whole passes.
        self.spans: list[tuple[str, int, int]] = []
        if len(repeat) > pass_len:
            self.spans.append(("repeat", repeat[pass_len], repeat[-1]))
        if novel:
            self.spans.append(("novel", novel[0], novel[-1]))
        self.open: dict[str, tuple[Any, float, int]] = {}
        self.out: dict[str, Any] = {}
        # Who owns the objects the repeat calls leave alive (probe/objects.py): retention path, else
        # allocation site. Started before the heap is read, so its own bookkeeping is in both readings.
        from bisector.probe.objects import ObjectOwners

        self.objects = ObjectOwners(ctx.model, lambda: model_modules(self.classifier), self.classifier)
        self.started = False  # --tracemalloc may have started tracing already: leave it running then
        # The repeat span's native stacks too (probe/native.py), where memray is installed.
        self.native = _native_tracer(ctx, self.classifier) if any(p == "repeat" for p, _, _ in self.spans) else None

    def _heap(self) -> float:
        return self.ctx.meters.heap_now() or 0.0

    def before(self, i: int) -> None:
        import tracemalloc as tm

        if i == self.start_at:
            if self.native is not None:
                self.native.warm(self._heap)  # the tracer's own warm-up pass runs under memray too
            if not tm.is_tracing():
                tm.start(max(1, self.ctx.options.owners))
                self.started = True
        for phase, first, _ in self.spans:
            if i == first:
                if phase == "repeat" and self.ctx.model is not None:
                    self.objects.begin()
                if phase == "repeat" and self.native is not None:
                    self.native.ready(self._heap)
                before = self._heap()
                snap = tm.take_snapshot()
                self.open[phase] = (snap, before, int(self._heap() - before))
                if phase == "repeat" and self.native is not None:
                    self.native.start()  # last: the snapshot is not among the span's native allocations

    def after(self, i: int) -> None:
        import tracemalloc as tm

        from bisector.judge.owners import summarize

        for phase, first, last in self.spans:
            if i == last and phase in self.open:
                snap0, heap0, cost = self.open.pop(phase)
                # memray stops first (its tables are freed as it stops); what a start and stop leave is not
                # the span's growth either.
                native = self.native if phase == "repeat" else None
                if native is not None:
                    native.stop()
                heap1 = self._heap() - cost - (native.leftover if native is not None else 0.0)
                snap1 = tm.take_snapshot()
                diffs = snap1.compare_to(snap0, "traceback")
                self.out[phase] = summarize(diffs, self.classifier, last - first + 1, heap1 - heap0)
                if native is not None:  # read once the span is measured (probe/native.py)
                    self.out[phase]["native_stacks"] = native.read(last - first + 1)
                del snap0, snap1, diffs
                if phase == "repeat" and self.ctx.model is not None:
                    self.out[phase]["objects"] = self.objects.end(last - first + 1)
        if i == len(self.steps) - 1 and self.started:
            tm.stop()

    def result(self) -> dict[str, Any]:
        return dict(self.out)


def model_modules(classifier: Any) -> tuple[list[Any], list[Any]]:
    """The imported modules of the model's own code, and those of the libraries it is built from."""
    import sys

    from bisector.judge.owners import LIBRARIES, MODEL

    user, libs = [], []
    for mod in list(sys.modules.values()):
        file = getattr(mod, "__file__", None)
        if not isinstance(file, str):
            continue
        group = classifier.group(file)
        if group == MODEL:
            user.append(mod)
        elif group == LIBRARIES:
            libs.append(mod)
    return user, libs


def _native_tracer(ctx: Context, classifier: Any) -> Any:
    from bisector.probe import native

    if not native.available(ctx.stage):
        return None
    return native.NativeTracer(ctx.workdir, classifier.owner, ctx.owner_roots)


def retention_tracer(ctx: Context, steps: tuple[Step, ...]) -> Any:
    """A retention probe's tracer (probe/retention.py): the repeat phase after its first pass (per
    call), and the novel phase (per new shape)."""
    from bisector.judge.owners import Classifier, installed_own
    from bisector.probe.retention import RetentionTracer

    classifier = Classifier(ctx.owner_roots, installed_own())
    repeat = [i for i, s in enumerate(steps) if s.phase == "repeat"]
    novel = [i for i, s in enumerate(steps) if s.phase == "novel"]
    pass_len = max(1, len({steps[i].key() for i in repeat}))
    spans: list[tuple[str, int, int]] = []
    if repeat:
        spans.append(("repeat", repeat[pass_len] if len(repeat) > pass_len else repeat[0], repeat[-1]))
    if novel:
        spans.append(("novel", novel[0], novel[-1]))

    def modules() -> tuple[list[Any], list[Any]]:
        return model_modules(classifier)

    def dims(first: int, last: int) -> list[int]:
        return sorted({int(v) for s in steps[first : last + 1] for v in s.dims.values()})

    return RetentionTracer(ctx.model, modules, spans, dims)
