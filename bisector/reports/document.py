"""The report document: one JSON that every page is rendered from.

It is the command's ``--json`` data plus what a page needs besides: the module tree, every
culprit's and every fix's own curve, the patch, ONNX detail. It is written as ``report.json`` next
to ``index.html``, and find/fix also keep it in their run directory, so ``bisector report DIR``
renders the same page again without a probe.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bisector.common.contract import stamp
from bisector.common.errors import UserError

DOCUMENT = "report.json"


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
