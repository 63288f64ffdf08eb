"""Rendering reports for the terminal. The library returns data; this turns it into lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.markup import escape
from rich.tree import Tree as RichTree

from bisector.common.units import PER_STAGE, format_bytes, probes_text
from bisector.fix.sources import registration_site
from bisector.fixers.base import UNSUPPORTED_OP
from bisector.judge.ceiling import describe as describe_ceilings
from bisector.judge.ceiling import stage_ceilings
from bisector.judge.choice import costs_more_than_it_saves
from bisector.judge.native import native_lines
from bisector.judge.owners import LIBRARIES, MODEL, TOOLCHAIN, native_share
from bisector.judge.retention import describe
from bisector.judge.signals import HEAP, TENSORS
from bisector.judge.verdict import CLEAN, INCONCLUSIVE, LEAK, SHAPE_GROWTH, TOOLCHAIN_LEAK
from bisector.lab.results import CRASHED, FAILED, MeasureReport, StageResult
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
PER = PER_STAGE

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
    per = PER.get(r.stage, "call")
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
    per = PER.get(r.stage, "call")
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
    per = PER.get(r.stage, "call")
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


def render_measure(report: MeasureReport, console: Any) -> None:

    band = report.options.bands.rss
    console.print(
        f"[bold]{escape(report.model.label)}[/]  inputs {escape(report.plan.describe())}  "
        + "  ".join(f"{k}={lo}..{hi}" if lo != hi else f"{k}={lo}" for k, (lo, hi) in report.plan.dims.items())
    )
    note = heap_note(report.stages.values())
    if note:
        console.print(escape(note), style="yellow")
    for r in report.stages.values():
        console.print(f"[{STYLE.get(r.kind, '')}]{escape(stage_line(r, band, report.plan.dims))}[/]")
        for extra in (chart(r, band), grown_types(r), *owners_lines(r), *reason_lines(r), baseline_line(r)):
            if extra:
                console.print(escape(extra), style="dim" if extra.lstrip().startswith("baseline") else None)
        if r.control_failure is not None:
            console.print(
                escape(f"{'':<10} control run failed ({failure_text(r.control_failure)}); figures are not corrected"),
                style="yellow",
            )
        hint = NEXT_STEP.get((r.stage, r.kind))
        if hint:
            console.print(escape(f"{'':<10} next: {hint}"), style="cyan")
    console.print(measure_verdict_line(report))


def measure_verdict_line(report: MeasureReport) -> str:
    """The last line of a measure report, and all that -q prints."""
    probes = probes_text(report.probes, getattr(report, "reused", 0))
    return f"verdict: [{STYLE.get(report.verdict, '')}]{report.verdict}[/]   {probes}, {report.wall_s:.1f} s"


def find_verdict_line(report: Any) -> str:
    """The last line of a find report, and all that -q prints: the verdict, the culprits, the probes."""
    where = ", ".join(f"{c.region or '<root>'} ({c.stage})" for c in report.culprits) or "none"
    status = "" if report.complete else "  [yellow]stopped before the end: run again to resume[/]"
    return (
        f"verdict: [{STYLE.get(report.verdict, '')}]{report.verdict}[/]   culprits: {escape(where)}   "
        f"{probes_text(report.probes, report.reused)}, {report.wall_s:.1f} s{status}"
    )


def render_find(report: Any, console: Any) -> None:
    """The measure lines per stage, then a tree from the root to each culprit."""

    m = report.measure
    band = m.options.bands.rss
    console.print(
        f"[bold]{escape(m.model.label)}[/]  inputs {escape(m.plan.describe())}  "
        + "  ".join(f"{k}={lo}..{hi}" if lo != hi else f"{k}={lo}" for k, (lo, hi) in m.plan.dims.items())
        + (f"  ({len(report.tree)} modules)" if report.tree is not None else "")  # None: stopped before capture
    )
    note = heap_note(m.stages.values())
    if note:
        console.print(escape(note), style="yellow")
    for stage, r in m.stages.items():
        console.print(f"[{STYLE.get(r.kind, '')}]{escape(stage_line(r, band, m.plan.dims))}[/]")
        for extra in (*owners_lines(r), *reason_lines(r)):
            console.print(escape(extra))
        search = report.searches.get(stage)
        if search is None or not search.culprits:
            if r.kind in (LEAK, SHAPE_GROWTH) and search is not None:
                console.print(escape(f"{'':<10} no region below the root misbehaves alone"), style="yellow")
            continue
        console.print(_culprit_tree(report, search, RichTree, escape))
        for region, why in search.unprobeable.items():
            console.print(escape(f"{'':<10} could not probe {region or '<root>'} alone: {why}"), style="dim")
        for region in search.inconclusive:
            console.print(escape(f"{'':<10} {region or '<root>'}: inconclusive after retries"), style="magenta")
    console.print(find_verdict_line(report))


def fix_verdict_line(report: Any) -> str:
    """All that `fix -q` prints: the find verdict line with the fixes kept."""
    total = len(report.kept)
    return f"{find_verdict_line(report.find)}   kept {total} fix{'es' if total != 1 else ''}"


def _culprit_label(report: Any, c: Any, type_name: str, escape: Any) -> str:
    f = c.figures
    per = PER.get(c.stage, "call")
    band = report.measure.options.bands.rss
    noise = f.noise_bytes or 0.0
    if c.kind == UNSUPPORTED_OP:  # a stage that did not run: the operators, no curve
        figures = ["operators " + ", ".join(f.operators or ())]
        own = " (the exporter)"
    else:
        figures = [f"{f.objects_per_call:+.0f} objects/{per}"] if f.objects_per_call else []
        if c.kind in (LEAK, TOOLCHAIN_LEAK) and f.growth_metric in (HEAP, TENSORS):
            figures.append(f"{format_bytes(f.growth_bytes_per_call or 0.0, signed=True)}/{per} ({f.growth_metric})")
        elif c.kind == LEAK:
            figures.append(f"{growth_text(f.growth_bytes_per_call, (f.repeat_steps or 0), noise, band)}/{per}")
        else:
            figures.append(f"{growth_text(f.growth_bytes_per_new_shape, (f.novel_steps or 0), noise, band)}/new shape")
            if f.bounded is not None:
                figures.append("bounded" if f.bounded else "unbounded")
        if c.kind == TOOLCHAIN_LEAK:
            who = "the exporter's" if c.stage == "export" else "the runtime's"
            own = f" ({who} own, not your code)"
        elif c.region == "" and not c.own_code:
            own = " (the runtime, for the whole model)"
        else:
            own = " (its own code)" if c.own_code and report.tree.children(c.region) else ""
            region = report.tree.regions.get(c.region)
            if c.own_code and c.region and region is not None and region.type.startswith("torch."):
                # torch's own module does not keep outputs: a hook its parent registered does

                site = registration_site(report.measure.model, c.region)
                own = f" (a hook registered at {site})" if site else own
    style = STYLE.get(c.kind, "bold")
    return (
        f"[{style}]{escape(c.region or '<root>')}[/]  {escape(type_name)}  [{style}]{c.kind}[/]  "
        f"{escape(', '.join(figures))}  ← culprit{own}"
    )


def _also_held(node: Any, c: Any, escape: Any) -> None:
    """The retention paths after the first (which the hint names)."""
    per = PER.get(c.stage, "call")
    for row in list(c.figures.retention or ())[1:]:
        node.add(f"[cyan]also {escape(describe(row, per))}[/]")


def _culprit_tree(report: Any, search: Any, RichTree: Any, escape: Any) -> Any:
    tree = report.tree
    root_region = tree.regions.get("")
    root_type = root_region.type.rsplit(".", 1)[-1] if root_region else ""
    root_culprit = next((c for c in search.culprits if c.region == ""), None)
    if root_culprit is not None:
        root = RichTree(_culprit_label(report, root_culprit, root_type, escape), guide_style="dim")
        root.add(f"[cyan]next: {escape(root_culprit.hint)}[/]")
        _also_held(root, root_culprit, escape)
    else:
        root = RichTree(escape(f"<root> {root_type}  {search.root.kind}"), guide_style="dim")
    nodes = {"": root}
    tested = {k[0]: o for k, o in search.tested.items() if len(k) == 1}
    for c in search.culprits:
        for path in tree.ancestors(c.region)[1:]:
            if path in nodes:
                continue
            parent = nodes[path.rpartition(".")[0] if "." in path else ""]
            region = tree.regions.get(path)
            type_name = region.type.rsplit(".", 1)[-1] if region else ""
            if path == c.region:
                node = parent.add(_culprit_label(report, c, type_name, escape))
                node.add(f"[cyan]next: {escape(c.hint)}[/]")
                _also_held(node, c, escape)
            else:
                o = tested.get(path)
                kind = o.kind if o is not None else "·"
                node = parent.add(escape(f"{path}  {type_name}  {kind}"))
            nodes[path] = node
    return root


def render_fix(report: Any, console: Any, show_dropped: bool = True, show_find: bool = True) -> None:
    """The find report (unless already shown), then per culprit the fixes kept (best first) and
    those dropped, and why, with each kept fix's trade-off."""

    if show_find:
        render_find(report.find, console)
    if not report.find.culprits:
        return
    console.print("")
    for c in report.find.culprits:
        evals = report.for_culprit(c)
        kept = [e for e in evals if e.kept]
        head = f"fixes for {c.region or '<root>'} ({c.stage} {c.kind}): {len(kept)} kept of {len(evals)} tried"
        console.print(f"[bold]{escape(head)}[/]")
        for e in kept:
            eq = "" if e.max_abs_diff is None else f"  outputs max |diff| {e.max_abs_diff:.2g}"
            if e.upfront_bytes is not None and abs(e.upfront_bytes) >= 5e6:
                eq += f"  holds {format_bytes(e.upfront_bytes, signed=True)} from the start"
            if e.steady_before_bytes is not None and e.steady_after_bytes is not None:
                eq += f"  largest RSS {format_bytes(e.steady_before_bytes)} -> {format_bytes(e.steady_after_bytes)}"
            if costs_more_than_it_saves(e):
                eq += "  costs more up front than the growth it prevents: not chosen unless picked"
            if e.removes_behaviour:
                eq += f"  removes behaviour: {e.removes_behaviour} (not chosen unless picked)"
            console.print(f"  [green]✓[/] {escape(e.fixer)}: {escape(e.summary)}")
            console.print(f"      {escape(e.reason)}{escape(eq)}", style="dim")
        if show_dropped:
            for e in evals:
                if not e.kept:
                    console.print(f"  [red]✗[/] {escape(e.fixer)}: {escape(e.summary)}", style="dim")
                    console.print(f"      {escape(e.reason)}", style="dim")
    total = len(report.kept)
    console.print(f"kept {total} fix{'es' if total != 1 else ''}   {report.probes} more probes, {report.wall_s:.1f} s")
