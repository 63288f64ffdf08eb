"""What the HTML templates show, as text and plain data: a report document's figures turned into
the sentences and cells a person reads. No markup here: the templates (templates/*.html.j2) lay
these out and escape them.

The document may be hand-edited (``bisector report`` reads it back), so every field is read with
.get() and a malformed entry reads as "-", never as an exception.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bisector.common.units import format_bytes, staged_unit
from bisector.common.units import per as step_of
from bisector.judge.ceiling import Ceiling
from bisector.judge.ceiling import describe as describe_ceilings
from bisector.model.kinds import Kind

PAGE = "index.html"
STAGE_ORDER = ("eager", "export", "inference")
OWNER_LABELS = (
    ("model", "your model"),
    ("libraries", "model libraries"),
    ("toolchain", "toolchain (torch, onnx, ORT)"),
    ("other", "other"),
)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "root"


def file_name(name: Any) -> str:
    """A model's name read from summary.json, as one file name inside the folder: the JSON may be
    hand-edited, and a name like "/etc/x" or "../x" must not reach outside --out (issue 19)."""
    return slug(str(name)).lstrip(".") or "model"


def href(path: str) -> str:
    """A link the page may carry: relative, no scheme (javascript:, data:, http:), no way up."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", path) or path.startswith(("/", "\\")) or ".." in path.split("/"):
        raise ValueError(f"not a relative link: {path!r}")
    return path


def bytes_text(v: Any, signed: bool = True) -> str:
    return format_bytes(v, signed=signed) if isinstance(v, (int, float)) else "-"


def ceiling_text(found: Any) -> str:
    """Bounded growth's ceiling from a report's JSON (untrusted: a malformed entry reads as "-")."""
    try:
        return describe_ceilings([Ceiling(**c) for c in found]) or "-"
    except (TypeError, ValueError):
        return "-"


def ordered_stages(doc: Mapping[str, Any]) -> list[str]:
    stages = doc.get("stages") or {}
    return [s for s in STAGE_ORDER if s in stages] + [s for s in stages if s not in STAGE_ORDER]


def dims_text(doc: Mapping[str, Any]) -> str:
    return "  ".join(f"{k}={lo}..{hi}" if lo != hi else f"{k}={lo}" for k, (lo, hi) in (doc.get("dims") or {}).items())


def headline(doc: Mapping[str, Any]) -> str:
    """One sentence: what leaks where, by how much (the first thing a person reads)."""
    culprits = doc.get("culprits") or []
    if culprits:
        c = culprits[0]
        per = step_of(c["stage"])
        if c["kind"] == Kind.SHAPE_GROWTH:
            amount = f"{bytes_text(c.get('growth_bytes_per_new_shape'))}/new shape"
        else:
            amount = f"{bytes_text(c.get('growth_bytes_per_call'))}/{per}"
            if c.get("objects_per_call") and abs(c["objects_per_call"]) >= 0.5:
                amount = f"{c['objects_per_call']:+.0f} live objects/{per}, {amount}"
        more = f" (+{len(culprits) - 1} more)" if len(culprits) > 1 else ""
        return f"{c['region'] or '<root>'} {c['kind']} in {c['stage']}: {amount}{more}"
    bad = [(s, r) for s, r in (doc.get("stages") or {}).items() if r.get("verdict") not in (Kind.CLEAN, None)]
    if bad:
        s, r = bad[0]
        return f"{s}: {r.get('verdict')} {bytes_text(r.get('growth_bytes_per_call'))}/{step_of(s)}"
    return "no stage grows above its detection floor"


def error_message(err: Mapping[str, Any]) -> str:
    return str(err.get("message") or err.get("describe") or json.dumps(err)[:400])


def growth_cell(r: Mapping[str, Any]) -> str:
    """The growth per call as measured, with its interval and under the floor when it is (as the
    terminal's stage line says it)."""
    rate, error, floor = r.get("growth_bytes_per_call"), r.get("error_bytes_per_call"), r.get("floor_bytes_per_call")
    text = bytes_text(rate)
    if error is not None and rate is not None:
        text += f" ± {bytes_text(error, False)}"
    if floor is not None and rate is not None and abs(rate) < floor:
        text += f" (under the {bytes_text(floor, False)} floor)"
    return text + f" ({r.get('growth_metric') or r.get('metric') or 'rss'})"


def figure_rows(r: Mapping[str, Any], per: str) -> list[tuple[str, str]]:
    """A stage's figures table: (what, value) per row."""
    baseline_objects = r.get("baseline_objects_per_call")
    rows = [
        ("growth per " + per, growth_cell(r)),
        ("growth per new shape", bytes_text(r.get("growth_bytes_per_new_shape"))),
        ("objects per " + per, "-" if r.get("objects_per_call") is None else f"{r['objects_per_call']:+.1f}"),
        ("detection floor per " + per, bytes_text(r.get("floor_bytes_per_call"), False)),
        ("noise (RSS)", bytes_text(r.get("noise_bytes"), False)),
        (
            "control (baseline) per " + per,
            bytes_text(r.get("baseline_bytes_per_call"))
            + (f", {baseline_objects:+.1f} objects" if baseline_objects else ""),
        ),
        ("decided by", str(r.get("decided_by") or "-")),
    ]
    if r.get("bounded") is not None:
        rows.append(("bounded by the largest shape", "yes" if r["bounded"] else "no (keeps growing)"))
    if r.get("ceiling"):
        rows.append(("ceiling (largest declared input)", ceiling_text(r["ceiling"])))
    return rows


def culprit_figure(c: Mapping[str, Any]) -> str:
    """A culprit's growth: per step (with its objects), or per new shape for shape-growth."""
    per = step_of(c["stage"])
    if c["kind"] == Kind.SHAPE_GROWTH:
        return f"{bytes_text(c.get('growth_bytes_per_new_shape'))}/new shape"
    objs = "" if c.get("objects_per_call") is None else f", {c['objects_per_call']:+.1f} objects/{per}"
    return f"{bytes_text(c.get('growth_bytes_per_call'))}/{per}{objs}"


@dataclass(frozen=True)
class FixFigures:
    """One fix's figures as its card says them: the unit it was judged on, before, after, and the
    outputs' largest difference."""

    unit: str
    before: str
    after: str
    outputs: str


def fix_figures(f: Mapping[str, Any]) -> FixFigures:
    unit = f.get("judged_on") or "bytes/call"
    if unit.startswith("objects"):
        key = "objects_per_call" if unit.endswith("call") else "objects_per_new_shape"

        def fmt(v: Any) -> str:
            return "-" if v is None else f"{v:+.1f}"

    else:
        key = "bytes_per_call" if unit.endswith("call") else "bytes_per_new_shape"
        fmt = bytes_text
    after = "0 (clean)" if f.get("after_kind") == Kind.CLEAN else fmt(f.get(f"after_{key}"))
    outputs = "" if f.get("max_abs_diff") is None else f" · outputs max |diff| {f['max_abs_diff']:.2g}"
    return FixFigures(staged_unit(unit, f["stage"]), fmt(f.get(f"before_{key}")), after, outputs)


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """(class, line) per line of a unified diff: "add", "del", "hunk", or "" for context."""
    out = []
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            cls = "add"
        elif line.startswith("-") and not line.startswith("---"):
            cls = "del"
        else:
            cls = "hunk" if line.startswith("@@") else ""
        out.append((cls, line))
    return out


def shown_patches(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [p for p in doc.get("patches") or [] if p.get("diff")]


# -- the module tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeNode:
    """One region of the module tree as the page shows it. kinds: its culprit verdicts ("leak
    (eager)"), empty when it is no culprit; tested: what probing it alone found; hidden: children
    left out (the tree is shown to depth 2 beyond the paths to the culprits)."""

    label: str
    type: str
    kinds: str
    tested: str
    children: tuple[TreeNode, ...]
    hidden: int


def module_tree(doc: Mapping[str, Any]) -> TreeNode | None:
    regions = {r["path"]: r for r in doc.get("tree") or []}
    if not regions:
        return None
    # A region can be a culprit in more than one stage (eager and export): each is shown.
    culprits: dict[str, list[str]] = {}
    for c in doc.get("culprits") or []:
        culprits.setdefault(c["region"], []).append(f"{c['kind']} ({c['stage']})")
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

    def node(path: str, depth: int) -> TreeNode:
        r = regions.get(path, {"type": "", "children": []})
        kids = [k for k in r.get("children", []) if k in regions]
        shown = [k for k in kids if k in keep or depth < 2]
        return TreeNode(
            label=path or "<root>",
            type=r.get("type", "").rsplit(".", 1)[-1],
            kinds=", ".join(culprits.get(path) or ()),
            tested=", ".join(tested.get(path) or ()),
            children=tuple(node(k, depth + 1) for k in shown),
            hidden=len(kids) - len(shown),
        )

    return node("", 0)


# -- repair's index -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepairRow:
    """One model's row of repair's index; link: its own page, when one was written."""

    spec: str
    link: str
    status: str
    verdict: str
    culprits: str
    kept: str
    note: str


def repair_row(m: Mapping[str, Any], folder: Path) -> RepairRow:
    name = file_name(m.get("name", ""))
    culprits = ", ".join(
        f"{c.get('region') or '<root>'} ({c.get('stage')} {c.get('kind')})" for c in m.get("culprits", [])
    )
    note = "; ".join(
        [f"{s}: {why}" for s, why in (m.get("stage_errors") or {}).items()]
        + [f"{s} bounded: {ceiling_text(c)}" for s, c in (m.get("ceilings") or {}).items()]
        + ([str(m["error"])] if m.get("error") else [])
    )
    return RepairRow(
        spec=str(m.get("spec", "")),
        link=href(f"{name}/{PAGE}") if (folder / name / PAGE).is_file() else "",
        status=str(m.get("status", "")),
        verdict=m.get("verdict") or "-",
        culprits=culprits or "-",
        kept="; ".join(k.get("fixer", "") for k in m.get("kept", [])) or "-",
        note=note,
    )


def counts_text(summary: Mapping[str, Any]) -> str:
    return ", ".join(f"{n} {k}" for k, n in (summary.get("counts") or {}).items())


def summary_models(summary: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    return summary.get("models") or []
