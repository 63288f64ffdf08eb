"""The lines of one stage in the terminal: its verdict and figures, its chart, who owns the growth,
the control's own growth, what to try next. Plain text; terminal.py adds rich's markup."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bisector.common.units import format_bytes
from bisector.common.units import per as step_of
from bisector.judge.ceiling import describe as describe_ceilings
from bisector.judge.ceiling import stage_ceilings
from bisector.judge.native import native_lines
from bisector.judge.owners import LIBRARIES, MODEL, TOOLCHAIN, native_share
from bisector.judge.verdict import CLEAN, HEAP, INCONCLUSIVE, LEAK, SHAPE_GROWTH, TENSORS, TOOLCHAIN_LEAK
from bisector.lab.results import CRASHED, FAILED, StageResult
from bisector.model.schedule import PHASES
from bisector.probe.types import ProbeCrashed, ProbeFailed, ProbeTimedOut
from bisector.reports.chart import phased_sparkline

STYLE = {
    LEAK: "bold red",
    SHAPE_GROWTH: "bold yellow",
    INCONCLUSIVE: "magenta",
    TOOLCHAIN_LEAK: "yellow",
    CLEAN: "green",
    CRASHED: "bold red",
    FAILED: "bold red",
}

NEXT_STEP = {
    ("eager", LEAK): "run `bisector find` to name the submodule whose forward keeps memory",
    (
        "export",
        LEAK,
    ): (
        "run `bisector find --stage export` to name the region; custom symbolic functions and forward-side "
        "lists are the usual cause"
    ),
    (
        "inference",
        LEAK,
    ): "a per-run leak in ONNX Runtime: try `bisector fix --stage inference` (runtime options) or a newer onnxruntime",
    (
        "eager",
        SHAPE_GROWTH,
    ): "a cache keyed by input shape, or the allocator holding the largest shape: `bisector find` names the region",
    (
        "export",
        SHAPE_GROWTH,
    ): "something in forward keeps one entry per input shape while exporting: `bisector find --stage export`",
    (
        "inference",
        SHAPE_GROWTH,
    ): "ONNX Runtime grows per new input shape: try `bisector fix` (bounded axes, sizes rounded to 16, arena options)",
    (
        "export",
        TOOLCHAIN_LEAK,
    ): "not your model's code: export once per process (or in a child process) if a service exports repeatedly",
    ("eager", TOOLCHAIN_LEAK): "not your model's code: torch keeps it; a newer torch may not",
    (
        "inference",
        TOOLCHAIN_LEAK,
    ): "not your model's code: ONNX Runtime keeps it; try a newer onnxruntime or `bisector fix --stage inference`",
}


def _figure(v, phase: str, rate: float | None, band: float, per: str = "new shape") -> str:
    metric = v.growth_metric if phase == "repeat" else v.metric
    sig = next((s for s in v.signals if s.metric == metric and s.phase == phase), None)
    if metric == HEAP and phase == "repeat":
        floor = sig.floor if sig is not None else v.floor_bytes_per_call
        return heap_text(rate, v.error_bytes_per_call, floor, per)
    if metric in (HEAP, TENSORS):  # exact: below its floor is "~0", above it the figure as measured
        if rate is None:
            return "-"
        return (
            "~0 B"
            if sig is not None and sig.floor is not None and abs(rate) < sig.floor
            else format_bytes(rate, signed=True)
        ) + f"/{per}"
    return growth_text(rate, sig.steps if sig else 0, sig.noise if sig else 0.0, band) + f"/{per}"


def heap_text(rate: float | None, error: float | None, floor: float | None, per: str = "call") -> str:
    """The heap's growth per call as measured, with its 95% interval, and under the floor when it
    is: a growth too small to call a leak is still a measurement ("+1.5 KB/call ± 0.4 KB (under the
    2.0 KB floor)")."""
    if rate is None:
        return "-"
    text = f"{format_bytes(rate, signed=True)}/{per}"
    if error is not None:
        text += f" ± {format_bytes(error)}"
    if floor is not None and abs(rate) < floor:
        text += f" (under the {format_bytes(floor)} floor)"
    return text


def growth_text(rate: float | None, steps: int, noise: float, band: float) -> str:
    """A growth rate, or "~0" when its total over the phase is lost in the noise: the terminal
    shows what was measured to matter; --json keeps every number as measured."""
    if rate is None:
        return "-"
    if steps and abs(rate * steps) < max(4 * noise, 0.05 * band):
        return "~0 B"
    return format_bytes(rate, signed=True)


def stage_line(r: StageResult, band: float = 5e6, dims: Mapping[str, Any] | None = None) -> str:
    """One plain line per stage: verdict and figures (rich markup added by the caller); bounded
    shape-growth with its ceiling at the largest declared input (dims: the plan's ranges)."""
    per = step_of(r.stage)
    if r.kind in (FAILED, CRASHED):
        return f"{r.stage:<10} {r.kind:<13} {failure_text(r.failure)}"
    v = r.verdict
    assert v is not None
    bits = [_figure(v, "repeat", v.growth_bytes_per_call, band, per)]
    if v.growth_bytes_per_new_shape is not None:
        bits.append(_figure(v, "novel", v.growth_bytes_per_new_shape, band))
    if v.objects_per_call is not None:
        bits.append(f"{v.objects_per_call:+.0f} objects/{per}")
    if v.growth_metric == TENSORS:
        bits[0] += " in tensors"  # the exact tensor meter's figure, not the heap's
    elif v.growth_metric == HEAP:
        if v.floor_bytes_per_call is not None and v.kind not in (CLEAN, INCONCLUSIVE):
            bits.append(f"floor {format_bytes(v.floor_bytes_per_call)}/{per}")
    elif v.noise_bytes is not None:
        bits.append(f"noise {format_bytes(v.noise_bytes)}")
    if v.kind == SHAPE_GROWTH and v.bounded is not None:
        bits.append("bounded by the largest shape" if v.bounded else "unbounded (keeps growing on smaller new shapes)")
    ceiling = describe_ceilings(stage_ceilings(r, dims or {}))
    if ceiling:
        bits.append(ceiling)
    tries = f"  [{r.attempts} tries]" if r.attempts > 1 else ""
    return f"{r.stage:<10} {kind_text(v, per):<13} {'  '.join(bits)}{tries}"


def kind_text(v: Any, per: str = "call") -> str:
    """The verdict with the floor it reached: "clean (nothing above 2.0 KB/call)"."""
    if v.kind in (CLEAN, INCONCLUSIVE) and v.floor_bytes_per_call is not None:
        return f"{v.kind} (nothing above {format_bytes(v.floor_bytes_per_call)}/{per})"
    return v.kind


def owners_lines(r: StageResult) -> list[str]:
    """Who keeps the growth per call, with the top site of each owner, when a traced probe ran."""
    v = r.verdict
    if v is None or not v.owners or "repeat" not in v.owners:
        return []

    o = v.owners["repeat"]
    per = step_of(r.stage)
    groups = o.get("groups") or {}
    parts = []
    for g, label in ((MODEL, "your model"), (LIBRARIES, "model libraries"), (TOOLCHAIN, "toolchain")):
        amount = float(groups.get(g) or 0.0)
        sites = (o.get("sites") or {}).get(g) or []
        where = f" ({sites[0]['where']})" if sites and amount >= 1024 else ""
        parts.append(f"{label} {format_bytes(amount)}{where}")
    parts.append(f"native {format_bytes(native_share(o))}")  # as attribute() settled it
    # Then where the native bytes were allocated, by library and symbol (probe/native.py), over the floor.
    return [f"{'':<10} owners per {per}: " + ", ".join(parts), *native_lines(o, per, v.floor_bytes_per_call or 0.0)]


def baseline_line(r: StageResult) -> str | None:
    """What the control measured: torch's or the runtime's own growth, never the model's."""
    v = r.verdict
    if v is None or r.control is None:
        return None
    per = step_of(r.stage)
    who = {"export": "the exporter itself", "inference": "ONNX Runtime itself", "eager": "torch itself"}[r.stage]
    objs = f", {v.baseline_objects_per_call:+.0f} objects" if v.baseline_objects_per_call else ""
    grows = format_bytes(v.baseline_bytes_per_call, signed=True)
    if v.baseline_bytes_per_call is not None and abs(v.baseline_bytes_per_call) < 1024 and not objs:
        grows = "~0 B"
    return f"{'':<10} baseline: {who} grows {grows}/{per}{objs} (trivial control module, not counted against the model)"


def chart(r: StageResult, band: float) -> str | None:
    """The curve of the metric that decided the verdict (objects, heap or RSS)."""
    if r.curve is None:
        return None
    metric = (r.verdict.decided_by or r.verdict.metric) if r.verdict else "rss"
    if not r.curve.has(metric):
        metric = r.verdict.metric if r.verdict else "rss"
    phases = [(p, r.curve.series(metric, p)) for p in PHASES]
    span = (
        0.0
        if metric in ("objects", "cuda_allocated", TENSORS)
        else ((r.verdict.floor_bytes_per_call or 0.0) * 4 if metric == HEAP and r.verdict else band)
    )
    line = phased_sparkline(phases, floor_span=span)
    if not line:
        return None
    values = r.curve.series(metric)
    names = "│".join(p for p, vs in phases if vs)
    span_text = (
        f"{min(values):,.0f}..{max(values):,.0f}"
        if metric == "objects"
        else f"{format_bytes(min(values))}..{format_bytes(max(values))}"
    )
    return f"{'':<10} {metric} {line}  {span_text}  ({names})"


def grown_types(r: StageResult, top: int = 3) -> str | None:
    if r.curve is None or r.verdict is None or r.kind not in (LEAK, SHAPE_GROWTH):
        return None
    phase = "repeat" if r.kind == LEAK else "novel"
    grown = r.curve.type_growth.get(phase) or {}
    ctrl = (r.control.type_growth.get(phase) or {}) if r.control else {}
    steps = len(r.curve.series("objects", phase)) or 1
    # Fewer than one per step is the runtime's own churn, not what piles up on every call.
    excess = {k: n - ctrl.get(k, 0) for k, n in grown.items() if n - ctrl.get(k, 0) >= steps}
    if not excess:
        return None
    items = sorted(excess.items(), key=lambda kv: -kv[1])[:top]
    what = "during repeated shapes" if r.kind == LEAK else "over new shapes"
    return f"{'':<10} objects left behind {what}: " + ", ".join(f"{k.split('.')[-1]} +{n}" for k, n in items)


def reason_lines(r: StageResult) -> list[str]:
    """Reasons a person needs beyond the figures: a toolchain's growth, a floor not reached."""
    v = r.verdict
    if v is None or v.kind not in (TOOLCHAIN_LEAK, INCONCLUSIVE):
        return []
    return [f"{'':<10} {reason}" for reason in v.reasons if "not your model" in reason or "floor" in reason]


def heap_note(stages: Any) -> str | None:
    """Said once per report: without the exact heap meter, bytes are judged on RSS with its band."""
    if any(r.curve is not None and r.curve.meta.get("heap_meter") == "unavailable" for r in stages):
        return (
            "note: this C library has no mallinfo2 (glibc 2.33+), so native bytes are judged on RSS with the "
            "noise band; leaks under the floor shown are not seen"
        )
    return None


def failure_text(failure: Any) -> str:
    kept = f" (probe folder kept: {failure.probe_dir})" if getattr(failure, "probe_dir", "") else ""
    if isinstance(failure, ProbeFailed):
        return failure.message + kept
    if isinstance(failure, (ProbeCrashed, ProbeTimedOut)):
        tail = failure.tail.strip().splitlines()[-1:] if failure.tail else []
        return failure.describe() + (f": {tail[0]}" if tail else "") + kept
    return str(failure)
