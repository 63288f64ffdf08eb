"""After a command: the HTML report, the repro bundles, the stored document, all local files (nothing
is sent anywhere). One call for every front end (cli, batch), so they write the same things the
same way."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bisector.reports.bundle import write_bundle
from bisector.reports.document import document, save_document
from bisector.reports.html import write_report
from bisector.reports.targets import targets_of


def write_artifacts(
    report: Any,
    report_dir: str | Path | None = None,
    bundle_dir: str | Path | None = None,
    patches: Sequence[Mapping[str, Any]] = (),
    say: Callable[[str], None] = lambda line: None,
    unfixed_only: bool = False,
) -> dict[str, Any]:
    """Write what was asked for and return what the JSON output gains (bundles, ONNX detail).

    find and fix also keep the document in their run directory, so ``bisector report`` can render
    it later without --report having been given. With --report but no --bundle, export and
    inference culprits still get a bundle under <report>/bundles: the ONNX detail comes from it."""

    extra: dict[str, Any] = {}
    targets = targets_of(report, unfixed_only) if (bundle_dir or report_dir) else []
    if not bundle_dir and report_dir:
        targets = [t for t in targets if t.stage in ("export", "inference")]
        bundle_dir = Path(report_dir) / "bundles" if targets else None
    bundles = []
    measure = getattr(getattr(report, "find", report), "measure", report)
    for t in targets:
        b = write_bundle(report, t, bundle_dir, timeout_s=measure.options.timeout_s)
        bundles.append(b)
        note = f" (incomplete: {b.error})" if b.error else ""
        say(f"bundle: {b.path / 'repro.py'}{note}")
    if bundles:
        extra["bundles"] = [str(b.path) for b in bundles]
        detail = {f"{b.target.stage}:{b.target.region}": dict(b.onnx_detail) for b in bundles if b.onnx_detail}
        if detail:
            extra["onnx_detail"] = detail
    doc = document(report, patches, extra)
    run_dir = getattr(getattr(report, "find", report), "run_dir", None)
    if run_dir:
        save_document(doc, run_dir)
    if report_dir:
        page = write_report(doc, report_dir)
        say(f"report: {page}")
    return extra
