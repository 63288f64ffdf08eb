"""A report to look at: one self-contained HTML file, charts also as PNG files beside it.

Everything is rendered from one report document (document.py) through jinja2 templates
(templates/*.html.j2, autoescaped: every name and figure from the document is escaped), so
``bisector report DIR`` renders the same page again without a probe.

The page loads nothing: charts are PNGs inlined as data URIs, the style sheet and one small script
inline (templates/report.css, templates/check_charts.js), allowed by their hashes in the page's
Content-Security-Policy. The script only checks the charts decoded (a browser test reads what it
wrote).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from bisector.common.errors import UserError
from bisector.common.units import per as step_of
from bisector.common.units import probes_text
from bisector.model.kinds import Kind
from bisector.reports import html_view as view
from bisector.reports.base import render_text
from bisector.reports.document import DOCUMENT, find_document, load_document, save_document
from bisector.reports.plots import stage_chart

PAGE = view.PAGE


# -- the templates --------------------------------------------------------------------------------


def _asset(name: str) -> str:
    return (resources.files("bisector.reports") / "templates" / name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


@functools.cache
def environment() -> Environment:
    """The templates, with what they call: the text helpers of html_view and the shell's assets."""
    env = Environment(
        loader=PackageLoader("bisector.reports", "templates"),
        autoescape=select_autoescape(("html.j2",), default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    css, script = _asset("report.css"), _asset("check_charts.js")
    # Nothing from the network, ever; the style sheet and the script by their hashes, not
    # 'unsafe-inline' (page.html.j2 says why).
    csp = f"default-src 'none'; img-src data:; style-src {_sha256(css)}; script-src {_sha256(script)}"
    env.globals.update(
        css=Markup(css),  # our own files, inlined verbatim: escaping would change what the hash covers
        script=Markup(script),
        csp=Markup(csp),
        owner_labels=view.OWNER_LABELS,
        step_of=step_of,
        slug=view.slug,
        error_message=view.error_message,
        figure_rows=view.figure_rows,
        culprit_figure=view.culprit_figure,
        fix_figures=view.fix_figures,
        diff_lines=view.diff_lines,
    )
    env.filters.update(
        bytes_text=view.bytes_text,
        b64=lambda png: base64.b64encode(png).decode(),
        percent=lambda share: f"{share:.0%}",
    )
    return env


def retention_table(rows: Any, per: str) -> str:
    """What holds the growth (retention.py): one row per path, with its source lines ("" for none)."""
    return str(environment().get_template("sections.html.j2").module.retention_table(rows, per))  # type: ignore[attr-defined]


# -- the charts -----------------------------------------------------------------------------------


def stated_growth(figures: Mapping[str, Any]) -> dict[str, float]:
    """Per metric, the growth per step a leak's text gives (the verdict's figures): the chart's
    line is drawn with it. Shape-growth is stated per new shape, which no repeat line shows."""
    if figures.get("verdict", figures.get("kind")) not in (Kind.LEAK, Kind.TOOLCHAIN_LEAK):
        return {}
    out: dict[str, float] = {}
    if figures.get("growth_bytes_per_call") is not None:
        out[str(figures.get("growth_metric") or "rss")] = float(figures["growth_bytes_per_call"])
    if figures.get("objects_per_call") is not None:
        out["objects"] = float(figures["objects_per_call"])
    return out


# Chart names come from the document's keys, slugged, so no key reaches outside charts/.


def _stage_charts(doc: Mapping[str, Any], band: Any) -> dict[str, bytes]:
    return {
        f"stage-{view.slug(stage)}": stage_chart(
            r["samples"],
            r.get("control_samples") or (),
            title=f"{stage}: {r.get('verdict')}",
            verdict=r.get("verdict", ""),
            floor_per_call=r.get("floor_bytes_per_call"),
            noise_band=band,
            decided_by=r.get("decided_by"),
            per=step_of(stage),
            stated=stated_growth(r),
        )
        for stage, r in (doc.get("stages") or {}).items()
        if r.get("samples")
    }


def _culprit_charts(doc: Mapping[str, Any], band: Any) -> dict[str, bytes]:
    charts = {}
    for key, curves in (doc.get("culprit_curves") or {}).items():
        if curves.get("samples"):
            stage, _, region = key.partition(":")
            c = next((c for c in doc.get("culprits", []) if c["stage"] == stage and c["region"] == region), {})
            charts[f"culprit-{view.slug(stage)}-{view.slug(region)}"] = stage_chart(
                curves["samples"],
                curves.get("control_samples") or (),
                title=f"{region or '<root>'} alone, {stage}: {c.get('kind', '')}",
                verdict=c.get("kind", ""),
                floor_per_call=c.get("floor_bytes_per_call"),
                noise_band=band,
                per=step_of(stage),
                stated=stated_growth(c),
            )
    return charts


def _fix_charts(doc: Mapping[str, Any], band: Any) -> dict[str, bytes]:
    charts = {}
    for i, fc in enumerate(doc.get("fix_curves") or []):
        after = fc.get("after") or {}
        if after.get("samples"):
            fix = (doc.get("fixes") or [{}] * (i + 1))[i]
            charts[f"fix-{i}"] = stage_chart(
                after["samples"],
                after.get("control_samples") or (),
                title=f"after {fix.get('fixer', '')}: {fix.get('after_kind', '')}",
                verdict=fix.get("after_kind", ""),
                noise_band=band,
                width=7.0,
                per=step_of(fix.get("stage", "")),
            )
    return charts


# -- the reporters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HtmlReporter:
    """One model's page: the document and its charts (PNG bytes by name)."""

    doc: Mapping[str, Any]
    charts: Mapping[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> HtmlReporter:
        """Draws every chart the document has curves for (matplotlib: the slow part)."""
        band = (doc.get("bands") or {}).get("rss")
        return cls(doc, {**_stage_charts(doc, band), **_culprit_charts(doc, band), **_fix_charts(doc, band)})

    def render(self, out: TextIO) -> None:
        doc = self.doc
        verdict = str(doc.get("verdict", ""))
        out.write(
            environment()
            .get_template("report.html.j2")
            .render(
                title=f"bisector: {doc.get('spec', '')} {verdict}",
                doc=doc,
                charts=self.charts,
                verdict=verdict,
                dims=view.dims_text(doc),
                probes=probes_text(
                    int(doc.get("probes") or 0),
                    int(doc.get("reused_probes") or 0) + int(doc.get("reused_controls") or 0),
                ),
                headline=view.headline(doc),
                stages=view.ordered_stages(doc),
                tree=view.module_tree(doc),
                patches=view.shown_patches(doc),
            )
        )


@dataclass(frozen=True)
class RepairIndexReporter:
    """repair's index.html over all models: the summary table, each row linking its report."""

    rows: tuple[view.RepairRow, ...]
    counts: str

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], folder: str | Path) -> RepairIndexReporter:
        """folder: where the per-model pages are (<folder>/<model name>/index.html)."""
        rows = tuple(view.repair_row(m, Path(folder)) for m in view.summary_models(summary))
        return cls(rows, view.counts_text(summary))

    def render(self, out: TextIO) -> None:
        template = environment().get_template("repair_index.html.j2")
        out.write(template.render(title="bisector repair", rows=self.rows, counts=self.counts))


def render_html(doc: Mapping[str, Any], charts: Mapping[str, bytes]) -> str:
    return render_text(HtmlReporter(doc, charts))


# -- writing --------------------------------------------------------------------------------------


def write_report(doc: Mapping[str, Any], out: str | Path) -> Path:
    """Write report.json, the charts as PNGs (charts/) and index.html into out; returns the page."""
    out = Path(out)
    (out / "charts").mkdir(parents=True, exist_ok=True)
    save_document(doc, out)
    reporter = HtmlReporter.from_document(doc)
    for name, png in reporter.charts.items():
        (out / "charts" / f"{name}.png").write_bytes(png)
    page = out / PAGE
    page.write_text(render_text(reporter), encoding="utf-8")
    return page


def write_repair_index(summary: Mapping[str, Any], out: str | Path) -> Path:
    """repair's index.html over all models (and its summary.json), linking each model's report
    (<out>/<model name>/index.html, when one was written)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    page = out / PAGE
    page.write_text(render_text(RepairIndexReporter.from_summary(summary, out)), encoding="utf-8")
    return page


def rerender(path: str | Path, out: str | Path | None = None) -> list[Path]:
    """`bisector report`: the pages again from stored documents, without a probe. A repair report
    folder (summary.json beside per-model folders) renders every model and the index."""
    p = Path(path)
    if p.is_dir() and (p / "summary.json").is_file() and not (p / DOCUMENT).is_file():
        return _rerender_repair(p, Path(out) if out else p)
    doc_file = find_document(p)
    doc = load_document(doc_file)
    return [write_report(doc, Path(out) if out else doc_file.parent)]


def _rerender_repair(p: Path, target: Path) -> list[Path]:
    try:
        summary = json.loads((p / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {p / 'summary.json'}: {exc}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("models") or [], list):
        raise UserError(f"{p / 'summary.json'} is not a bisector repair summary")
    pages = []
    for m in summary.get("models") or []:
        name = view.file_name(m.get("name", ""))  # read and written inside the folders given, only
        folder = p / name
        if (folder / DOCUMENT).is_file():
            pages.append(write_report(load_document(folder), target / name))
    pages.append(write_repair_index(summary, target))
    return pages
