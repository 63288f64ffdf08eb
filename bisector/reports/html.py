"""A report to look at: one self-contained HTML file, charts also as PNG files beside it.

Everything is rendered from one JSON *document* (the command's ``--json`` data plus what a page
needs besides: the module tree, every culprit's and every fix's own curve, the patch, ONNX detail).
The document is written as ``report.json`` next to ``index.html``, and find/fix also keep it in
their run directory, so ``bisector report DIR`` renders the same page again without a probe.

The page loads nothing: charts are PNGs inlined as data URIs, styles inline, and one small
script that only checks the charts decoded (a browser test reads what it wrote).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bisector.common.contract import stamp
from bisector.common.errors import UserError
from bisector.common.units import format_bytes, probes_text, staged_unit
from bisector.common.units import per as step_of
from bisector.judge.ceiling import Ceiling
from bisector.judge.ceiling import describe as describe_ceilings
from bisector.model.kinds import Kind
from bisector.reports.plots import stage_chart

DOCUMENT = "report.json"
PAGE = "index.html"
STAGE_ORDER = ("eager", "export", "inference")


# -- the document ---------------------------------------------------------------------------------


def _curves(figures: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "samples": list(figures.get("samples") or []),
        "control_samples": list(figures.get("control_samples") or []),
    }


def document(
    report: Any, patches: Sequence[Mapping[str, Any]] = (), extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON document of a MeasureReport, FindReport or FixReport (duck-typed: the library's
    reports, never re-measured)."""

    if hasattr(report, "evaluations"):
        kind, data, find = "fix", report.to_json(), report.find
    elif hasattr(report, "searches"):
        kind, data, find = "find", report.to_json(), report
    else:
        kind, data, find = "measure", report.to_json(), None
    data = stamp(data, kind)  # report_kind, bisector_version and the toolchain's versions first
    data["created"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if find is not None:
        data["tree"] = find.tree.to_json() if find.tree is not None else []
        data["culprit_curves"] = {f"{c.stage}:{c.region}": _curves(c.figures) for c in find.culprits}
    if kind == "fix":
        data["fix_curves"] = [
            {"after": _curves(e.after), "after_model": _curves(e.after_model)} for e in report.evaluations
        ]
    if patches:
        data["patches"] = [dict(p) for p in patches]
    if extra:
        data.update(extra)
    return data


def save_document(doc: Mapping[str, Any], folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / DOCUMENT
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, target)
    return target


def find_document(path: str | Path) -> Path:
    """The document a folder holds: a report folder's report.json, a run's, or (for a whole
    ``.bisector`` folder or a repair output) the most recently written one below it."""
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return p
    if not p.is_dir():
        raise UserError(f"{path} is not a folder; give a report folder or a run directory (.bisector/runs/...)")
    if (p / DOCUMENT).is_file():
        return p / DOCUMENT
    found = sorted(p.glob(f"**/{DOCUMENT}"), key=lambda f: f.stat().st_mtime, reverse=True)
    if not found:
        raise UserError(f"no stored results in {path}: run `bisector find` (or measure/fix with --report) first")
    return found[0]


def load_document(path: str | Path) -> dict[str, Any]:
    f = find_document(path)
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {f}: {exc}") from None
    if not isinstance(data, dict) or "stages" not in data:
        raise UserError(f"{f} is not a bisector report document")
    return data


# -- writing --------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "root"


def _file_name(name: Any) -> str:
    """A model's name read from summary.json, as one file name inside the folder: the JSON may be
    hand-edited, and a name like "/etc/x" or "../x" must not reach outside --out (issue 19)."""
    return _slug(str(name)).lstrip(".") or "model"


def _href(path: str) -> str:
    """A link the page may carry: relative, no scheme (javascript:, data:, http:), no way up."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", path) or path.startswith(("/", "\\")) or ".." in path.split("/"):
        raise ValueError(f"not a relative link: {path!r}")
    return html.escape(path, quote=True)


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


def write_report(doc: Mapping[str, Any], out: str | Path) -> Path:
    """Write report.json, the charts as PNGs (charts/) and index.html into out; returns the page."""

    out = Path(out)
    (out / "charts").mkdir(parents=True, exist_ok=True)
    save_document(doc, out)
    charts: dict[str, bytes] = {}
    bands = doc.get("bands") or {}
    for stage, r in (doc.get("stages") or {}).items():
        if not r.get("samples"):
            continue
        # Chart files are named from the document's keys: slugged, so no key reaches outside charts/.
        charts[f"stage-{_slug(stage)}"] = stage_chart(
            r["samples"],
            r.get("control_samples") or (),
            title=f"{stage}: {r.get('verdict')}",
            verdict=r.get("verdict", ""),
            floor_per_call=r.get("floor_bytes_per_call"),
            noise_band=bands.get("rss"),
            decided_by=r.get("decided_by"),
            per=step_of(stage),
            stated=stated_growth(r),
        )
    for key, curves in (doc.get("culprit_curves") or {}).items():
        if curves.get("samples"):
            stage, _, region = key.partition(":")
            c = next((c for c in doc.get("culprits", []) if c["stage"] == stage and c["region"] == region), {})
            charts[f"culprit-{_slug(stage)}-{_slug(region)}"] = stage_chart(
                curves["samples"],
                curves.get("control_samples") or (),
                title=f"{region or '<root>'} alone, {stage}: {c.get('kind', '')}",
                verdict=c.get("kind", ""),
                floor_per_call=c.get("floor_bytes_per_call"),
                noise_band=bands.get("rss"),
                per=step_of(stage),
                stated=stated_growth(c),
            )
    for i, fc in enumerate(doc.get("fix_curves") or []):
        after = fc.get("after") or {}
        if after.get("samples"):
            fix = (doc.get("fixes") or [{}] * (i + 1))[i]
            charts[f"fix-{i}"] = stage_chart(
                after["samples"],
                after.get("control_samples") or (),
                title=f"after {fix.get('fixer', '')}: {fix.get('after_kind', '')}",
                verdict=fix.get("after_kind", ""),
                noise_band=bands.get("rss"),
                width=7.0,
                per=step_of(fix.get("stage", "")),
            )
    for name, png in charts.items():
        (out / "charts" / f"{name}.png").write_bytes(png)
    page = out / PAGE
    page.write_text(render_html(doc, charts), encoding="utf-8")
    return page


def write_repair_index(summary: Mapping[str, Any], out: str | Path) -> Path:
    """repair's index.html over all models: the summary table, each row linking its report
    (<out>/<model name>/index.html, when one was written)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    rows = []
    for m in summary.get("models") or []:
        name = _file_name(m.get("name", ""))
        page = out / name / PAGE
        label = html.escape(str(m.get("spec", "")))
        cell = f'<a href="{_href(f"{name}/{PAGE}")}">{label}</a>' if page.is_file() else label
        culprits = (
            ", ".join(
                html.escape(f"{c.get('region') or '<root>'} ({c.get('stage')} {c.get('kind')})")
                for c in m.get("culprits", [])
            )
            or "-"
        )
        kept = "; ".join(html.escape(k.get("fixer", "")) for k in m.get("kept", [])) or "-"
        status = str(m.get("status", ""))
        note = "; ".join(
            [f"{s}: {why}" for s, why in (m.get("stage_errors") or {}).items()]
            + [f"{s} bounded: {_ceiling_text(c)}" for s, c in (m.get("ceilings") or {}).items()]
            + ([str(m["error"])] if m.get("error") else [])
        )
        rows.append(
            f"<tr><td>{cell}</td><td><span class='badge {html.escape(status)}'>{html.escape(status)}</span></td>"
            f"<td>{html.escape(m.get('verdict') or '-')}</td><td>{culprits}</td><td>{kept}</td>"
            f"<td>{html.escape(note)}</td></tr>"
        )
    counts = ", ".join(f"{n} {k}" for k, n in (summary.get("counts") or {}).items())
    body = (
        f"<h1>bisector repair</h1><p>{len(summary.get('models') or [])} models: {html.escape(counts)}</p>"
        "<table class='summary'><tr><th>model</th><th>status</th><th>verdict</th><th>culprits</th>"
        "<th>best kept fix</th><th>note</th></tr>" + "".join(rows) + "</table>"
    )
    page = out / PAGE
    page.write_text(_page("bisector repair", body), encoding="utf-8")
    return page


def rerender(path: str | Path, out: str | Path | None = None) -> list[Path]:
    """`bisector report`: the pages again from stored documents, without a probe. A repair report
    folder (summary.json beside per-model folders) renders every model and the index."""
    p = Path(path)
    if p.is_dir() and (p / "summary.json").is_file() and not (p / DOCUMENT).is_file():
        target = Path(out) if out else p
        pages = []
        try:
            summary = json.loads((p / "summary.json").read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {p / 'summary.json'}: {exc}") from None
        if not isinstance(summary, dict) or not isinstance(summary.get("models") or [], list):
            raise UserError(f"{p / 'summary.json'} is not a bisector repair summary")
        for m in summary.get("models") or []:
            name = _file_name(m.get("name", ""))  # read and written inside the folders given, only
            folder = p / name
            if (folder / DOCUMENT).is_file():
                pages.append(write_report(load_document(folder), target / name))
        pages.append(write_repair_index(summary, target))
        return pages
    doc_file = find_document(p)
    doc = load_document(doc_file)
    return [write_report(doc, Path(out) if out else doc_file.parent)]


# -- rendering ------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 6px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;color:#fff;background:#2e7d32}
.badge.leak,.badge.crashed,.badge.failed,.badge.unfixed,.badge.error{background:#c62828}
.badge.shape-growth{background:#ef6c00}
.badge.toolchain-leak{background:#8d6e00}
.badge.inconclusive{background:#6a1b9a}
.badge.big{font-size:22px;padding:6px 18px;border-radius:8px}
.headline{display:flex;gap:16px;align-items:center;margin:12px 0}
.card{border:1px solid #ddd;border-radius:8px;padding:12px 16px;margin:12px 0;background:#fff}
.card.leak,.card.crashed,.card.failed{border-left:6px solid #c62828} .card.shape-growth{border-left:6px solid #ef6c00}
.card.clean{border-left:6px solid #2e7d32}
.card.toolchain-leak{border-left:6px solid #8d6e00}
.card.inconclusive{border-left:6px solid #6a1b9a}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #e0e0e0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} img.chart{max-width:100%;display:block;margin:8px 0}
ul.tree{list-style:none;padding-left:18px;font-family:ui-monospace,monospace;font-size:13px} ul.tree li{margin:2px 0}
.culprit{color:#c62828;font-weight:700} .muted{color:#777} .reasons{font-size:13px;color:#444}
pre.diff{background:#fafafa;border:1px solid #eee;padding:8px;font-size:12px;overflow-x:auto}
.add{color:#1b5e20;background:#e8f5e9;display:block}
.del{color:#b71c1c;background:#ffebee;display:block}
.hunk{color:#1565c0;display:block}
.kept{color:#2e7d32;font-weight:700}
.dropped{color:#c62828}
.pair{display:flex;gap:8px;flex-wrap:wrap}
.pair>div{flex:1;min-width:300px}
.headline-text{font-size:18px}
"""

# Only checks that every chart decoded: a broken image is a console error a test can see.
SCRIPT = """
window.addEventListener('load',function(){var imgs=document.querySelectorAll('img.chart'),bad=0;
for(var i=0;i<imgs.length;i++){if(!imgs[i].complete||imgs[i].naturalWidth===0){bad++;}}
document.body.setAttribute('data-charts',String(imgs.length));document.body.setAttribute('data-broken',String(bad));
if(bad){console.error('bisector report: '+bad+' chart(s) failed to render');}});
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


# Nothing from the network, ever: a report is attached to issues and opened offline. The one style
# sheet and the one script are allowed by their hashes, not 'unsafe-inline': markup that slipped
# into a page (a name from a hand-edited report.json) can neither run nor restyle it.
CSP = f"default-src 'none'; img-src data:; style-src {_sha256(CSS)}; script-src {_sha256(SCRIPT)}"


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>{body}<script>{SCRIPT}</script></body></html>\n"
    )


def _b(v: Any, signed: bool = True) -> str:

    return format_bytes(v, signed=signed) if isinstance(v, (int, float)) else "-"


def _img(charts: Mapping[str, bytes], name: str, alt: str, cls: str = "") -> str:
    png = charts.get(name)
    if png is None:
        return ""
    data = base64.b64encode(png).decode()
    return (
        f'<img class="chart {cls}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}" '
        f'data-file="charts/{html.escape(name)}.png">'
    )


def _growth_cell(r: Mapping[str, Any]) -> str:
    """The growth per call as measured, with its interval and under the floor when it is (as the
    terminal's stage line says it)."""
    rate, error, floor = r.get("growth_bytes_per_call"), r.get("error_bytes_per_call"), r.get("floor_bytes_per_call")
    text = _b(rate)
    if error is not None and rate is not None:
        text += f" ± {_b(error, False)}"
    if floor is not None and rate is not None and abs(rate) < floor:
        text += f" (under the {_b(floor, False)} floor)"
    return text + f" ({r.get('growth_metric') or r.get('metric') or 'rss'})"


def _figures_table(r: Mapping[str, Any], per: str) -> str:
    rows = [
        ("growth per " + per, _growth_cell(r)),
        ("growth per new shape", _b(r.get("growth_bytes_per_new_shape"))),
        ("objects per " + per, "-" if r.get("objects_per_call") is None else f"{r['objects_per_call']:+.1f}"),
        ("detection floor per " + per, _b(r.get("floor_bytes_per_call"), False)),
        ("noise (RSS)", _b(r.get("noise_bytes"), False)),
        (
            "control (baseline) per " + per,
            _b(r.get("baseline_bytes_per_call"))
            + (f", {r['baseline_objects_per_call']:+.1f} objects" if r.get("baseline_objects_per_call") else ""),
        ),
        ("decided by", html.escape(str(r.get("decided_by") or "-"))),
    ]
    if r.get("bounded") is not None:
        rows.append(("bounded by the largest shape", "yes" if r["bounded"] else "no (keeps growing)"))
    if r.get("ceiling"):
        rows.append(("ceiling (largest declared input)", _ceiling_text(r["ceiling"])))
    return (
        "<table>"
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _ceiling_text(found: Any) -> str:
    """Bounded growth's ceiling from a report's JSON (untrusted: a malformed entry reads as "-")."""
    try:
        return describe_ceilings([Ceiling(**c) for c in found]) or "-"
    except (TypeError, ValueError):
        return "-"


def _owners(owners: Mapping[str, Any] | None, per: str) -> str:
    if not owners or "repeat" not in owners:
        return ""
    o = owners["repeat"]
    groups = o.get("groups") or {}
    rows = []
    labels = {
        "model": "your model",
        "libraries": "model libraries",
        "toolchain": "toolchain (torch, onnx, ORT)",
        "other": "other",
    }
    for g, label in labels.items():
        sites = (o.get("sites") or {}).get(g) or []
        where = "<br>".join(f"{html.escape(str(s.get('where')))} ({_b(s.get('bytes'))})" for s in sites) or "-"
        rows.append(f"<tr><td>{label}</td><td>{_b(groups.get(g))}</td><td>{where}</td></tr>")
    rows.append(f"<tr><td>native (no Python allocation explains it)</td><td>{_b(o.get('native'))}</td><td>-</td></tr>")
    return (
        f"<h3>Who owns the growth (per {per}, traced probe)</h3>"
        f"<table><tr><th>owner</th><th>bytes/{per}</th><th>top sites</th></tr>" + "".join(rows) + "</table>"
    )


def _stage(stage: str, r: Mapping[str, Any], charts: Mapping[str, bytes]) -> str:
    per = step_of(stage)
    kind = r.get("verdict", "")
    head = (
        f"<h2 id='stage-{html.escape(_slug(stage))}'>{html.escape(stage)} "
        f"<span class='badge {html.escape(kind)}'>{html.escape(kind)}</span></h2>"
    )
    parts = [f"<div class='card {html.escape(kind)} stage' data-stage='{html.escape(stage)}'>", head]
    if r.get("error"):
        err = r["error"]
        msg = err.get("message") or err.get("describe") or json.dumps(err)[:400]
        parts.append(f"<p class='culprit'>{html.escape(str(msg))}</p>")
        if err.get("probe_dir"):
            parts.append(f"<p>probe folder kept: <code>{html.escape(err['probe_dir'])}</code></p>")
    parts.append(_img(charts, f"stage-{_slug(stage)}", f"{stage} memory curves", "stage-chart"))
    parts.append(_figures_table(r, per))
    reasons = r.get("reasons") or []
    if reasons:
        parts.append(
            "<h3>Why</h3><ul class='reasons'>" + "".join(f"<li>{html.escape(x)}</li>" for x in reasons) + "</ul>"
        )
    parts.append(_owners(r.get("owners"), per))
    parts.append("</div>")
    return "".join(parts)


def _tree(doc: Mapping[str, Any]) -> str:
    regions = {r["path"]: r for r in doc.get("tree") or []}
    if not regions:
        return ""
    # A region can be a culprit in more than one stage (eager and export): each is shown.
    culprits: dict[str, list[Mapping[str, Any]]] = {}
    for c in doc.get("culprits") or []:
        culprits.setdefault(c["region"], []).append(c)
    tested: dict[str, list[str]] = {}
    for stage, s in (doc.get("search") or {}).items():
        for t in s.get("tested") or []:
            if len(t["regions"]) == 1:
                tested.setdefault(t["regions"][0], []).append(f"{t['kind']} ({stage})")
    # Show the paths to the culprits in full and the rest of the tree to depth 2, so a large
    # model stays readable and the culprits stand out.
    keep = {""}
    for path in culprits:
        parts = path.split(".") if path else []
        keep.update(".".join(parts[:i]) for i in range(len(parts) + 1))

    def node(path: str, depth: int) -> str:
        r = regions.get(path, {"type": "", "children": []})
        t = r.get("type", "").rsplit(".", 1)[-1]
        label = html.escape(path or "<root>")
        found = culprits.get(path)
        if found:
            kinds = ", ".join(f"{c['kind']} ({c['stage']})" for c in found)
            text = f"<span class='culprit'>{label} {html.escape(t)} — {html.escape(kinds)} ← culprit</span>"
        else:
            k = ", ".join(tested.get(path) or ())
            text = f"{label} <span class='muted'>{html.escape(t)}{' · ' + html.escape(k) if k else ''}</span>"
        kids = [k for k in r.get("children", []) if k in regions]
        shown = [k for k in kids if k in keep or depth < 2]
        inner = "".join(node(k, depth + 1) for k in shown)
        hidden = len(kids) - len(shown)
        if hidden:
            inner += f"<li class='muted'>… {hidden} more</li>"
        return f"<li>{text}{'<ul class=tree>' + inner + '</ul>' if inner else ''}</li>"

    return "<h2 id='tree'>Module tree</h2><ul class='tree'>" + node("", 0) + "</ul>"


def _culprits(doc: Mapping[str, Any], charts: Mapping[str, bytes]) -> str:
    out = []
    for c in doc.get("culprits") or []:
        per = step_of(c["stage"])
        name = f"culprit-{_slug(c['stage'])}-{_slug(c['region'])}"
        objs = "" if c.get("objects_per_call") is None else f", {c['objects_per_call']:+.1f} objects/{per}"
        fig = (
            f"{_b(c.get('growth_bytes_per_call'))}/{per}{objs}"
            if c["kind"] != Kind.SHAPE_GROWTH
            else f"{_b(c.get('growth_bytes_per_new_shape'))}/new shape"
        )
        out.append(
            f"<div class='card {html.escape(c['kind'])} culprit-card'>"
            f"<h3><span class='culprit'>{html.escape(c['region'] or '<root>')}</span> "
            f"{html.escape(c.get('type') or '')} — {html.escape(c['stage'])} "
            f"<span class='badge {html.escape(c['kind'])}'>{html.escape(c['kind'])}</span></h3>"
            f"<p>{html.escape(fig)}{' · its own code' if c.get('own_code') else ''}</p>"
            f"<p class='reasons'>next: {html.escape(c.get('hint') or '')}</p>"
            + _retention(c.get("retention"), per)
            + _img(charts, name, f"{c['region']} alone")
            + _owners(c.get("owners"), per)
            + _onnx(doc, c)
            + "</div>"
        )
    return ("<h2 id='culprits'>Culprits</h2>" + "".join(out)) if out else ""


def _retention(rows: Any, per: str) -> str:
    """What holds the growth (retention.py): one row per path, with its source lines."""
    if not rows:
        return ""
    body = "".join(
        f"<tr><td><code>{html.escape(r['path'])}</code></td><td>{html.escape(r['container'])}</td>"
        f"<td>{r['entries_per_call']:+g}/{per}, {r['entries_per_new_shape']:+g}/new shape"
        f"{' (keys: ' + html.escape(r['keys']) + ')' if r.get('keys') else ''}</td>"
        f"<td>{html.escape(r.get('defined_at') or '-')}</td>"
        f"<td>{html.escape(', '.join(r.get('mutated_at') or []) or '-')}</td></tr>"
        for r in rows
    )
    return (
        "<table class='retention'><tr><th>held by</th><th>container</th><th>growth</th>"
        f"<th>defined at</th><th>grown at</th></tr>{body}</table>"
    )


def _onnx(doc: Mapping[str, Any], c: Mapping[str, Any]) -> str:
    d = (doc.get("onnx_detail") or {}).get(f"{c['stage']}:{c['region']}")
    if not d:
        return ""
    parts = []
    hist = d.get("histogram")
    if hist:
        ops = "".join(
            f"<tr><td>{html.escape(str(op))}</td><td>{html.escape(str(n))}</td></tr>"
            for op, n in list(hist["ops"].items())[:20]
        )
        parts.append(
            f"<h3>Exported graph: {html.escape(str(hist['nodes']))} nodes</h3>"
            f"<table class='ops'><tr><th>op type</th><th>nodes</th></tr>{ops}</table>"
        )
    prof = d.get("profile")
    if prof:
        ops = "".join(
            f"<tr><td>{html.escape(str(o['op']))}</td><td>{html.escape(str(o['us']))} µs</td>"
            f"<td>{o['share']:.0%}</td><td>{html.escape(str(o['count']))}</td></tr>"
            for o in prof["top_ops"]
        )
        nodes = "".join(
            f"<tr><td>{html.escape(str(n['name']))}</td><td>{html.escape(str(n['op']))}</td>"
            f"<td>{html.escape(str(n['us']))} µs</td><td>{n['share']:.0%}</td></tr>"
            for n in prof["top_nodes"]
        )
        parts.append(
            f"<h3>ONNX Runtime profile ({html.escape(str(prof['runs']))} runs, "
            f"{html.escape(str(prof['total_us']))} µs in kernels)</h3><div class='pair'>"
            f"<div><table><tr><th>op type</th><th>time</th><th>share</th><th>kernel calls</th></tr>{ops}</table></div>"
            f"<div><table><tr><th>node</th><th>op</th><th>time</th><th>share</th></tr>{nodes}</table></div></div>"
        )
    if d.get("error"):
        parts.append(f"<p class='muted'>ONNX detail: {html.escape(d['error'])}</p>")
    return "".join(parts)


def _fixes(doc: Mapping[str, Any], charts: Mapping[str, bytes]) -> str:
    fixes = doc.get("fixes") or []
    if not fixes:
        return ""
    out = ["<h2 id='fixes'>Fixes tried</h2>"]
    for i, f in enumerate(fixes):
        unit = f.get("judged_on") or "bytes/call"
        if unit.startswith("objects"):
            key = "objects_per_call" if unit.endswith("call") else "objects_per_new_shape"
            fmt = lambda v: "-" if v is None else f"{v:+.1f}"  # noqa: E731
        else:
            key = "bytes_per_call" if unit.endswith("call") else "bytes_per_new_shape"
            fmt = _b
        before, after = (
            fmt(f.get(f"before_{key}")),
            ("0 (clean)" if f.get("after_kind") == Kind.CLEAN else fmt(f.get(f"after_{key}"))),
        )
        mark = "<span class='kept'>✓ kept</span>" if f.get("kept") else "<span class='dropped'>✗ dropped</span>"
        eq = "" if f.get("max_abs_diff") is None else f" · outputs max |diff| {f['max_abs_diff']:.2g}"
        culprit_chart = _img(charts, f"culprit-{_slug(f['stage'])}-{_slug(f['region'])}", "before")
        after_chart = _img(charts, f"fix-{i}", "after")
        out.append(
            f"<div class='card {'clean' if f.get('kept') else 'leak'} fix'>"
            f"<h3>{mark} {html.escape(f['fixer'])}: {html.escape(f.get('summary') or '')}</h3>"
            f"<p>{html.escape(f['region'] or '<root>')} ({html.escape(f['stage'])}): "
            f"{html.escape(staged_unit(unit, f['stage']))} "
            f"{html.escape(before)} → {html.escape(after)}{html.escape(eq)}</p>"
            f"<p class='reasons'>{html.escape(f.get('reason') or '')}</p>"
            + (
                f"<div class='pair'><div><b>before</b>{culprit_chart}</div><div><b>after</b>{after_chart}</div></div>"
                if after_chart
                else ""
            )
            + "</div>"
        )
    return "".join(out)


def _diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        cls = (
            "add"
            if line.startswith("+") and not line.startswith("+++")
            else "del"
            if line.startswith("-") and not line.startswith("---")
            else "hunk"
            if line.startswith("@@")
            else ""
        )
        lines.append(f"<span class='{cls}'>{html.escape(line)}</span>" if cls else html.escape(line))
    return "<pre class='diff'>" + "\n".join(lines) + "</pre>"


def _patches(doc: Mapping[str, Any]) -> str:
    patches = [p for p in doc.get("patches") or [] if p.get("diff")]
    if not patches:
        return ""
    return "<h2 id='patch'>The patch</h2>" + "".join(
        f"<h3>{html.escape(p.get('path', ''))}</h3>"
        f"<p class='reasons'>{html.escape(p.get('summary') or '')}</p>{_diff_html(p['diff'])}"
        for p in patches
    )


def headline(doc: Mapping[str, Any]) -> str:
    """One sentence: what leaks where, by how much (the first thing a person reads)."""
    culprits = doc.get("culprits") or []
    if culprits:
        c = culprits[0]
        per = step_of(c["stage"])
        if c["kind"] == Kind.SHAPE_GROWTH:
            amount = f"{_b(c.get('growth_bytes_per_new_shape'))}/new shape"
        else:
            amount = f"{_b(c.get('growth_bytes_per_call'))}/{per}"
            if c.get("objects_per_call") and abs(c["objects_per_call"]) >= 0.5:
                amount = f"{c['objects_per_call']:+.0f} live objects/{per}, {amount}"
        more = f" (+{len(culprits) - 1} more)" if len(culprits) > 1 else ""
        return f"{c['region'] or '<root>'} {c['kind']} in {c['stage']}: {amount}{more}"
    bad = [(s, r) for s, r in (doc.get("stages") or {}).items() if r.get("verdict") not in (Kind.CLEAN, None)]
    if bad:
        s, r = bad[0]
        return f"{s}: {r.get('verdict')} {_b(r.get('growth_bytes_per_call'))}/{step_of(s)}"
    return "no stage grows above its detection floor"


def render_html(doc: Mapping[str, Any], charts: Mapping[str, bytes]) -> str:
    verdict = str(doc.get("verdict", ""))
    dims = "  ".join(f"{k}={lo}..{hi}" if lo != hi else f"{k}={lo}" for k, (lo, hi) in (doc.get("dims") or {}).items())
    stages = doc.get("stages") or {}
    ordered = [s for s in STAGE_ORDER if s in stages] + [s for s in stages if s not in STAGE_ORDER]
    nav = " · ".join(f"<a href='#stage-{html.escape(_slug(s))}'>{html.escape(s)}</a>" for s in ordered)
    body = [
        f"<h1>{html.escape(str(doc.get('spec', '')))}</h1>",
        f"<p class='muted'>inputs {html.escape(str(doc.get('inputs', '')))} {html.escape(dims)} · bisector "
        f"{html.escape(str(doc.get('report_kind', '')))} · "
        f"{html.escape(probes_text(int(doc.get('probes') or 0), int(doc.get('reused_probes') or 0)))}, "
        f"{html.escape(str(doc.get('wall_s', 0)))} s · "
        f"{html.escape(str(doc.get('created', '')))} "
        f"· bisector {html.escape(str(doc.get('bisector_version', '')))}</p>",
        f"<div class='headline'>"
        f"<span class='badge big {html.escape(verdict)}' id='verdict'>{html.escape(verdict.upper())}</span>"
        f"<span class='headline-text'>{html.escape(headline(doc))}</span></div>",
        f"<p>{nav}</p>",
    ]
    body += [_stage(s, stages[s], charts) for s in ordered]
    body += [_tree(doc), _culprits(doc, charts), _fixes(doc, charts), _patches(doc)]
    if doc.get("bundles"):
        body.append(
            "<h2>Repro bundles</h2><ul>"
            + "".join(f"<li><code>{html.escape(b)}</code></li>" for b in doc["bundles"])
            + "</ul>"
        )
    return _page(f"bisector: {doc.get('spec', '')} {verdict}", "".join(body))
