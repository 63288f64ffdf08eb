"""One reporter protocol (reports/base.py, issue 23 item 4): every renderer of a report is built
from the data and renders into the sink it is given; the HTML's templates ship as package data;
the step of each stage ("call", "export", "run") is defined once."""

from __future__ import annotations

import io
import re
import sys
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from bisector.reports.base import Reporter, render_text
from bisector.reports.html import HtmlReporter, RepairIndexReporter, render_html
from bisector.reports.issue import IssueReporter, issue_text
from bisector.reports.targets import BundleTarget
from bisector.reports.terminal import FindReporter, FixReporter, MeasureReporter

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def console() -> Console:
    return Console(file=io.StringIO(), width=200, record=True, color_system=None)


def test_every_renderer_follows_the_protocol_and_renders_what_its_function_returns(tmp_path) -> None:
    doc = {
        "spec": "m.py:<Net>",
        "verdict": "clean",
        "stages": {"eager": {"verdict": "clean", "floor_bytes_per_call": 2048.0}},
    }
    page = HtmlReporter(doc)
    target = BundleTarget("eager", "blocks.1", "leak", {"growth_bytes_per_call": 4096.0, "own_code": True})
    issue = IssueReporter.from_target("m.py:Net", target, {}, "env\n")
    index = RepairIndexReporter.from_summary(
        {"models": [{"name": "m", "spec": "m.py:Net", "status": "clean"}]}, tmp_path
    )
    terminal = [MeasureReporter(SimpleNamespace()), FindReporter(SimpleNamespace()), FixReporter(SimpleNamespace())]
    for reporter in (page, issue, index, *terminal):
        assert isinstance(reporter, Reporter), type(reporter).__name__
    assert render_text(page) == render_html(doc, {}) and "m.py:&lt;Net&gt;" in render_text(page)
    assert render_text(issue) == issue_text("m.py:Net", target, {}, "env\n") and "own issue tracker" in render_text(
        issue
    )
    out = io.StringIO()
    index.render(out)
    assert "<td>m.py:Net</td>" in out.getvalue() and "<table class='summary'>" in out.getvalue()


def test_quiet_terminal_reporters_render_the_verdict_line_alone() -> None:
    measure = SimpleNamespace(verdict="leak", probes=3, reused=0, wall_s=1.25)
    culprit = SimpleNamespace(region="blocks.1", stage="eager")
    find = SimpleNamespace(verdict="leak", culprits=[culprit], complete=True, probes=5, reused=2, wall_s=2.0)
    fix = SimpleNamespace(find=find, kept=[object()])
    said = {}
    for name, reporter in (
        ("measure", MeasureReporter.from_report(measure, quiet=True)),  # type: ignore[arg-type]
        ("find", FindReporter.from_report(find, quiet=True)),
        ("fix", FixReporter.from_report(fix, quiet=True)),
    ):
        c = console()
        reporter.render(c)
        said[name] = c.export_text().splitlines()
    assert said["measure"] == ["verdict: leak   3 probes, 1.2 s"]
    assert said["find"] == ["verdict: leak   culprits: blocks.1 (eager)   5 probes (+2 reused), 2.0 s"]
    assert said["fix"] == [said["find"][0] + "   kept 1 fix"]


def test_the_templates_are_package_data() -> None:
    """An installed wheel has every template: each file in templates/ matches package-data."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["bisector.reports"]
    folder = ROOT / "bisector" / "reports" / "templates"
    files = sorted(p.relative_to(folder.parent).as_posix() for p in folder.iterdir() if p.is_file())
    assert {"templates/page.html.j2", "templates/report.html.j2", "templates/report.css"} <= set(files)
    assert [f for f in files if not any(fnmatch(f, pat) for pat in patterns)] == []
    assert any(re.match(r"jinja2\b", d) for d in config["project"]["dependencies"])


def test_the_reports_take_the_step_of_each_stage_from_common_units() -> None:
    """ "call", "export", "run" per stage is common/units.per's: no report keeps its own table."""
    table = re.compile(r"""["']inference["']\s*:\s*["']run["']""")
    where = [p.name for p in (ROOT / "bisector" / "reports").rglob("*.py") if table.search(p.read_text())]
    assert where == []
    assert table.search((ROOT / "bisector" / "common" / "units.py").read_text())
