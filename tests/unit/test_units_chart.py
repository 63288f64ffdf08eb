from __future__ import annotations

import pytest

from bisector.common.errors import UserError
from bisector.common.units import format_bytes, parse_size
from bisector.reports.chart import BLOCKS, phased_sparkline, sparkline


def test_sizes() -> None:
    assert parse_size("5MB") == 5_000_000
    assert parse_size("200 MiB") == 200 * 2**20
    assert parse_size("1.5G") == 1_500_000_000
    assert parse_size("4096") == 4096
    with pytest.raises(UserError):
        parse_size("five")
    assert format_bytes(1_234_567) == "1.2 MB"
    assert format_bytes(2048, signed=True) == "+2.0 KB"
    assert format_bytes(-500) == "-500 B"
    assert format_bytes(None) == "-"


def test_flat_curve_within_the_band_draws_flat() -> None:
    line = sparkline([100.0, 101.0, 99.0, 100.0], floor_span=1000.0)
    assert set(line) == {BLOCKS[0]}


def test_growth_fills_the_chart_and_phases_are_marked() -> None:
    line = phased_sparkline([("repeat", [0.0, 1.0, 2.0]), ("novel", [3.0, 4.0])], floor_span=1.0)
    assert line.split("│")[0][0] == BLOCKS[0]
    assert line.endswith(BLOCKS[-1])
    assert line.count("│") == 1


def test_long_curves_are_bucketed() -> None:
    assert len(sparkline([float(i) for i in range(500)], width=40)) == 40


def test_export_growth_reads_per_export_and_inference_per_run_in_the_progress_line() -> None:
    """Issue 25: export growth was labelled "/call" on the stage line; the JSON's figure, the text
    and the HTML (test_html_report) now say the same number in the stage's own step."""
    from bisector.common.units import staged_unit
    from bisector.judge.verdict import Verdict
    from bisector.lab.measure import stage_summary
    from bisector.lab.results import StageResult
    from bisector.model.kinds import Kind

    v = Verdict(Kind.LEAK, 189_000.0, 0.0, 0.0, 0.0, 0.0)
    assert stage_summary(StageResult("export", Kind.LEAK, verdict=v, probes=2), 3.0) == (
        "leak, +189.0 KB/export (2 probes, 3 s)"
    )
    assert stage_summary(StageResult("inference", Kind.LEAK, verdict=v, probes=1), 3.0) == (
        "leak, +189.0 KB/run (1 probe, 3 s)"
    )
    assert staged_unit("bytes/call", "export") == "bytes/export" and staged_unit("bytes/new shape", "export") == (
        "bytes/new shape"
    )
