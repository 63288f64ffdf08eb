from __future__ import annotations

import pytest

from bisector.chart import BLOCKS, phased_sparkline, sparkline
from bisector.errors import UserError
from bisector.units import format_bytes, parse_size


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
