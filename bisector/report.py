"""Rendering reports for the terminal. The library returns data; this turns it into lines."""

from __future__ import annotations

from typing import Any

from bisector.chart import phased_sparkline
from bisector.measure import CRASHED, FAILED, MeasureReport, StageResult
from bisector.probe.types import ProbeCrashed, ProbeFailed, ProbeTimedOut
from bisector.schedule import PHASES
from bisector.units import format_bytes
from bisector.verdict import CLEAN, INCONCLUSIVE, LEAK, SHAPE_GROWTH
from fixers.base import UNSUPPORTED_OP

STYLE = {
    LEAK: "bold red",
    SHAPE_GROWTH: "bold yellow",
    INCONCLUSIVE: "magenta",
    CLEAN: "green",
    CRASHED: "bold red",
    FAILED: "bold red",
}
PER = {"eager": "call", "export": "export", "inference": "run"}

NEXT_STEP = {
    ("eager", LEAK): "run `bisector find` to name the submodule whose forward keeps memory",
    ("export", LEAK): "run `bisector find --stage export` to name the region; custom symbolic functions and forward-side lists are the usual cause",
    ("inference", LEAK): "a per-run leak in ONNX Runtime: try `bisector fix --stage inference` (runtime options) or a newer onnxruntime",
    ("eager", SHAPE_GROWTH): "a cache keyed by input shape, or the allocator holding the largest shape: `bisector find` names the region",
    ("export", SHAPE_GROWTH): "something in forward keeps one entry per input shape while exporting: `bisector find --stage export`",
    ("inference", SHAPE_GROWTH): "ONNX Runtime grows per new input shape: try `bisector fix` (bounded axes, sizes rounded to 16, arena options)",
}


def _figure(v, phase: str, rate: float | None, band: float) -> str:
    sig = next((s for s in v.signals if s.metric == v.metric and s.phase == phase), None)
    return growth_text(rate, sig.steps if sig else 0, sig.noise if sig else 0.0, band)


def growth_text(rate: float | None, steps: int, noise: float, band: float) -> str:
    """A growth rate, or "~0" when its total over the phase is lost in the noise: the terminal
    shows what was measured to matter; --json keeps every number as measured."""
    if rate is None:
        return "-"
    if steps and abs(rate * steps) < max(4 * noise, 0.05 * band):
        return "~0 B"
    return format_bytes(rate, signed=True)


def stage_line(r: StageResult, band: float = 5e6) -> str:
    """One plain line per stage: verdict and figures (rich markup added by the caller)."""
    per = PER.get(r.stage, "call")
    if r.kind in (FAILED, CRASHED):
        return f"{r.stage:<10} {r.kind:<13} {failure_text(r.failure)}"
    v = r.verdict
    assert v is not None
    bits = [f"{_figure(v, 'repeat', v.growth_bytes_per_call, band)}/{per}"]
    if v.growth_bytes_per_new_shape is not None:
        bits.append(f"{_figure(v, 'novel', v.growth_bytes_per_new_shape, band)}/new shape")
    if v.objects_per_call is not None:
        bits.append(f"{v.objects_per_call:+.0f} objects/{per}")
    if v.noise_bytes is not None:
        bits.append(f"noise {format_bytes(v.noise_bytes)}")
    if v.kind == SHAPE_GROWTH and v.bounded is not None:
        bits.append("bounded by the largest shape" if v.bounded else "unbounded (keeps growing on smaller new shapes)")
    tries = f"  [{r.attempts} tries]" if r.attempts > 1 else ""
    return f"{r.stage:<10} {v.kind:<13} {'  '.join(bits)}{tries}"


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
    if r.curve is None:
        return None
    metric = r.verdict.metric if r.verdict else "rss"
    phases = [(p, r.curve.series(metric, p)) for p in PHASES]
    line = phased_sparkline(phases, floor_span=band)
    if not line:
        return None
    values = r.curve.series(metric)
    names = "│".join(p for p, vs in phases if vs)
    return f"{'':<10} {metric} {line}  {format_bytes(min(values))}..{format_bytes(max(values))}  ({names})"


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


def failure_text(failure: Any) -> str:
    if isinstance(failure, ProbeFailed):
        return failure.message
    if isinstance(failure, (ProbeCrashed, ProbeTimedOut)):
        tail = failure.tail.strip().splitlines()[-1:] if failure.tail else []
        return failure.describe() + (f": {tail[0]}" if tail else "")
    return str(failure)


def render_measure(report: MeasureReport, console: Any) -> None:
    from rich.markup import escape

    band = report.options.bands.rss
    console.print(f"[bold]{escape(report.model.label)}[/]  inputs {escape(report.plan.describe())}  " + "  ".join(
        f"{k}={lo}..{hi}" if lo != hi else f"{k}={lo}" for k, (lo, hi) in report.plan.dims.items()
    ))
    for r in report.stages.values():
        console.print(f"[{STYLE.get(r.kind, '')}]{escape(stage_line(r, band))}[/]")
        for extra in (chart(r, band), grown_types(r), baseline_line(r)):
            if extra:
                console.print(escape(extra), style="dim" if extra.lstrip().startswith("baseline") else None)
        if r.control_failure is not None:
            console.print(escape(f"{'':<10} control run failed ({failure_text(r.control_failure)}); figures are not corrected"), style="yellow")
        hint = NEXT_STEP.get((r.stage, r.kind))
        if hint:
            console.print(escape(f"{'':<10} next: {hint}"), style="cyan")
    console.print(
        f"verdict: [{STYLE.get(report.verdict, '')}]{report.verdict}[/]   "
        f"{report.probes} probes, {report.wall_s:.1f} s"
    )


def render_find(report: Any, console: Any) -> None:
    """The measure lines per stage, then a tree from the root to each culprit."""
    from rich.markup import escape
    from rich.tree import Tree as RichTree

    m = report.measure
    band = m.options.bands.rss
    console.print(
        f"[bold]{escape(m.model.label)}[/]  inputs {escape(m.plan.describe())}  "
        + "  ".join(f"{k}={lo}..{hi}" if lo != hi else f"{k}={lo}" for k, (lo, hi) in m.plan.dims.items())
        + (f"  ({len(report.tree)} modules)" if report.tree is not None else "")  # None: stopped before capture
    )
    for stage, r in m.stages.items():
        console.print(f"[{STYLE.get(r.kind, '')}]{escape(stage_line(r, band))}[/]")
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
    culprits = report.culprits
    where = ", ".join(f"{c.region or '<root>'} ({c.stage})" for c in culprits) or "none"
    status = "" if report.complete else "  [yellow]stopped before the end: run again to resume[/]"
    console.print(
        f"verdict: [{STYLE.get(report.verdict, '')}]{report.verdict}[/]   culprits: {escape(where)}   "
        f"{report.probes} probes" + (f" (+{report.reused} reused)" if report.reused else "")
        + f", {report.wall_s:.1f} s{status}"
    )


def _culprit_label(report: Any, c: Any, type_name: str, escape: Any) -> str:
    f = c.figures
    per = PER.get(c.stage, "call")
    band = report.measure.options.bands.rss
    noise = f.get("noise_bytes") or 0.0
    if c.kind == UNSUPPORTED_OP:  # a stage that did not run: the operators, no curve
        figures = ["operators " + ", ".join(f.get("operators") or ())]
        own = " (the exporter)"
    else:
        figures = [f"{f['objects_per_call']:+.0f} objects/{per}"] if f.get("objects_per_call") else []
        if c.kind == LEAK:
            figures.append(f"{growth_text(f.get('growth_bytes_per_call'), f.get('repeat_steps', 0), noise, band)}/{per}")
        else:
            figures.append(f"{growth_text(f.get('growth_bytes_per_new_shape'), f.get('novel_steps', 0), noise, band)}/new shape")
            if f.get("bounded") is not None:
                figures.append("bounded" if f["bounded"] else "unbounded")
        if c.region == "" and not c.own_code:
            own = " (the runtime, for the whole model)"
        else:
            own = " (its own code)" if c.own_code and report.tree.children(c.region) else ""
    style = STYLE.get(c.kind, "bold")
    return f"[{style}]{escape(c.region or '<root>')}[/]  {escape(type_name)}  [{style}]{c.kind}[/]  {escape(', '.join(figures))}  ← culprit{own}"


def _culprit_tree(report: Any, search: Any, RichTree: Any, escape: Any) -> Any:
    tree = report.tree
    root_region = tree.regions.get("")
    root_type = root_region.type.rsplit(".", 1)[-1] if root_region else ""
    root_culprit = next((c for c in search.culprits if c.region == ""), None)
    if root_culprit is not None:
        root = RichTree(_culprit_label(report, root_culprit, root_type, escape), guide_style="dim")
        root.add(f"[cyan]next: {escape(root_culprit.hint)}[/]")
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
            else:
                o = tested.get(path)
                kind = o.kind if o is not None else "·"
                node = parent.add(escape(f"{path}  {type_name}  {kind}"))
            nodes[path] = node
    return root


def render_fix(report: Any, console: Any, show_dropped: bool = True) -> None:
    """The find report, then per culprit the fixes kept (best first) and those dropped, and why."""
    from rich.markup import escape

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
            console.print(f"  [green]✓[/] {escape(e.fixer)}: {escape(e.summary)}")
            console.print(f"      {escape(e.reason)}{escape(eq)}", style="dim")
        if show_dropped:
            for e in evals:
                if not e.kept:
                    console.print(f"  [red]✗[/] {escape(e.fixer)}: {escape(e.summary)}", style="dim")
                    console.print(f"      {escape(e.reason)}", style="dim")
    total = len(report.kept)
    console.print(f"kept {total} fix{'es' if total != 1 else ''}   {report.probes} more probes, {report.wall_s:.1f} s")
