"""Rendering reports for the terminal. The library returns data; a reporter (base.py's protocol)
is built from a report and renders it to a rich Console: measure's stages, find's culprit trees,
fix's kept and dropped fixes, or under -q the verdict line alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.tree import Tree as RichTree

from bisector.common.units import format_bytes, probes_text
from bisector.common.units import per as step_of
from bisector.fix.sources import registration_site
from bisector.fixers.base import UNSUPPORTED_OP
from bisector.judge.choice import costs_more_than_it_saves
from bisector.judge.retention import describe
from bisector.judge.verdict import HEAP, LEAK, SHAPE_GROWTH, TENSORS, TOOLCHAIN_LEAK
from bisector.lab.results import MeasureReport
from bisector.reports.stage_lines import (
    NEXT_STEP,
    STYLE,
    baseline_line,
    chart,
    failure_text,
    grown_types,
    growth_text,
    heap_note,
    owners_lines,
    reason_lines,
    stage_line,
)


def _header(m: MeasureReport) -> str:
    """The model, its inputs and their dims' ranges: the first line of every report."""
    dims = "  ".join(f"{k}={lo}..{hi}" if lo != hi else f"{k}={lo}" for k, (lo, hi) in m.plan.dims.items())
    return f"[bold]{escape(m.model.label)}[/]  inputs {escape(m.plan.describe())}  " + dims


@dataclass(frozen=True)
class MeasureReporter:
    """measure's report: per stage its line, chart, owners, baseline and next step, then the
    verdict line; quiet (-q): the verdict line alone."""

    report: MeasureReport
    quiet: bool = False

    @classmethod
    def from_report(cls, report: MeasureReport, quiet: bool = False) -> MeasureReporter:
        return cls(report, quiet)

    def render(self, out: Console) -> None:
        report = self.report
        if not self.quiet:
            band = report.options.bands.rss
            out.print(_header(report))
            note = heap_note(report.stages.values())
            if note:
                out.print(escape(note), style="yellow")
            for r in report.stages.values():
                out.print(f"[{STYLE.get(r.kind, '')}]{escape(stage_line(r, band, report.plan.dims))}[/]")
                self._details(r, band, out)
        out.print(measure_verdict_line(report))

    @staticmethod
    def _details(r: Any, band: float, out: Console) -> None:
        for extra in (chart(r, band), grown_types(r), *owners_lines(r), *reason_lines(r), baseline_line(r)):
            if extra:
                out.print(escape(extra), style="dim" if extra.lstrip().startswith("baseline") else None)
        if r.control_failure is not None:
            out.print(
                escape(f"{'':<10} control run failed ({failure_text(r.control_failure)}); figures are not corrected"),
                style="yellow",
            )
        hint = NEXT_STEP.get((r.stage, r.kind))
        if hint:
            out.print(escape(f"{'':<10} next: {hint}"), style="cyan")


def render_measure(report: MeasureReport, console: Console) -> None:
    MeasureReporter.from_report(report).render(console)


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


@dataclass(frozen=True)
class FindReporter:
    """find's report: the measure lines per stage, then a tree from the root to each culprit, then
    the verdict line; quiet (-q): the verdict line alone."""

    report: Any  # FindReport
    quiet: bool = False

    @classmethod
    def from_report(cls, report: Any, quiet: bool = False) -> FindReporter:
        return cls(report, quiet)

    def render(self, out: Console) -> None:
        report = self.report
        if not self.quiet:
            m = report.measure
            # tree None: stopped before the capture
            out.print(_header(m) + (f"  ({len(report.tree)} modules)" if report.tree is not None else ""))
            note = heap_note(m.stages.values())
            if note:
                out.print(escape(note), style="yellow")
            for stage, r in m.stages.items():
                out.print(f"[{STYLE.get(r.kind, '')}]{escape(stage_line(r, m.options.bands.rss, m.plan.dims))}[/]")
                for extra in (*owners_lines(r), *reason_lines(r)):
                    out.print(escape(extra))
                self._search(r, report.searches.get(stage), out)
        out.print(find_verdict_line(report))

    def _search(self, r: Any, search: Any, out: Console) -> None:
        """One stage's search: the culprits' tree, the regions it could not probe or decide."""
        if search is None or not search.culprits:
            if r.kind in (LEAK, SHAPE_GROWTH) and search is not None:
                out.print(escape(f"{'':<10} no region below the root misbehaves alone"), style="yellow")
            return
        out.print(_culprit_tree(self.report, search, RichTree, escape))
        for region, why in search.unprobeable.items():
            out.print(escape(f"{'':<10} could not probe {region or '<root>'} alone: {why}"), style="dim")
        for region in search.inconclusive:
            out.print(escape(f"{'':<10} {region or '<root>'}: inconclusive after retries"), style="magenta")


def render_find(report: Any, console: Console) -> None:
    FindReporter.from_report(report).render(console)


def fix_verdict_line(report: Any) -> str:
    """All that `fix -q` prints: the find verdict line with the fixes kept."""
    total = len(report.kept)
    return f"{find_verdict_line(report.find)}   kept {total} fix{'es' if total != 1 else ''}"


def _culprit_label(report: Any, c: Any, type_name: str, escape: Any) -> str:
    f = c.figures
    per = step_of(c.stage)
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
    per = step_of(c.stage)
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


@dataclass(frozen=True)
class FixReporter:
    """fix's report: the find report (unless already shown: show_find), then per culprit the fixes
    kept (best first) and those dropped (show_dropped), and why, with each kept fix's trade-off;
    quiet (-q): the verdict line alone."""

    report: Any  # FixReport
    show_dropped: bool = True
    show_find: bool = True
    quiet: bool = False

    @classmethod
    def from_report(
        cls, report: Any, show_dropped: bool = True, show_find: bool = True, quiet: bool = False
    ) -> FixReporter:
        return cls(report, show_dropped, show_find, quiet)

    def render(self, out: Console) -> None:
        report = self.report
        if self.quiet:
            out.print(fix_verdict_line(report))
            return
        if self.show_find:
            FindReporter.from_report(report.find).render(out)
        if not report.find.culprits:
            return
        out.print("")
        for c in report.find.culprits:
            self._culprit(c, out)
        total = len(report.kept)
        out.print(f"kept {total} fix{'es' if total != 1 else ''}   {report.probes} more probes, {report.wall_s:.1f} s")

    def _culprit(self, c: Any, out: Console) -> None:
        evals = self.report.for_culprit(c)
        kept = [e for e in evals if e.kept]
        head = f"fixes for {c.region or '<root>'} ({c.stage} {c.kind}): {len(kept)} kept of {len(evals)} tried"
        out.print(f"[bold]{escape(head)}[/]")
        for e in kept:
            out.print(f"  [green]✓[/] {escape(e.fixer)}: {escape(e.summary)}")
            out.print(f"      {escape(e.reason)}{escape(_trade_off(e))}", style="dim")
        if self.show_dropped:
            for e in evals:
                if not e.kept:
                    out.print(f"  [red]✗[/] {escape(e.fixer)}: {escape(e.summary)}", style="dim")
                    out.print(f"      {escape(e.reason)}", style="dim")


def _trade_off(e: Any) -> str:
    """A kept fix's costs: its outputs' difference, memory held from the start, the largest RSS
    without and with it, behaviour it removes."""
    eq = "" if e.max_abs_diff is None else f"  outputs max |diff| {e.max_abs_diff:.2g}"
    if e.upfront_bytes is not None and abs(e.upfront_bytes) >= 5e6:
        eq += f"  holds {format_bytes(e.upfront_bytes, signed=True)} from the start"
    if e.steady_before_bytes is not None and e.steady_after_bytes is not None:
        eq += f"  largest RSS {format_bytes(e.steady_before_bytes)} -> {format_bytes(e.steady_after_bytes)}"
    if costs_more_than_it_saves(e):
        eq += "  costs more up front than the growth it prevents: not chosen unless picked"
    if e.removes_behaviour:
        eq += f"  removes behaviour: {e.removes_behaviour} (not chosen unless picked)"
    return eq


def render_fix(report: Any, console: Console, show_dropped: bool = True, show_find: bool = True) -> None:
    FixReporter.from_report(report, show_dropped, show_find).render(console)
