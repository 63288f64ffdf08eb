"""Phase timings: spans recorded from many threads, totals in the order a repair meets them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from bisector.lab.timings import PhaseTimes, Span, Stopwatch, summed
from bisector.repairs.results import ModelResult, RepairSummary


def test_spans_from_many_threads_all_land_and_sum_per_phase() -> None:
    watch = Stopwatch()

    def work(i: int) -> None:
        with watch.phase("measure" if i % 2 else "build", f"candidate {i}"):
            pass

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(work, range(40)))
    times = watch.snapshot()
    assert len(times.spans) == 40
    assert [s.phase for s in times.spans].count("measure") == 20
    assert list(times.totals()) == ["build", "measure"]


def test_totals_follow_the_phases_order_and_survive_json() -> None:
    times = PhaseTimes((Span("check", "patches", 2.0), Span("verdict", "eager", 1.5), Span("verdict", "export", 1.0)))
    assert times.totals() == {"verdict": 2.5, "check": 2.0}
    again = PhaseTimes.from_json(times.to_json())
    assert again == times
    assert summed([times, again]) == {"verdict": 5.0, "check": 4.0}


def test_a_span_is_recorded_when_the_phase_raises() -> None:
    watch = Stopwatch()
    try:
        with watch.phase("equivalence", "broken"):
            raise RuntimeError("the candidate does not run")
    except RuntimeError:
        pass
    assert [s.phase for s in watch.snapshot().spans] == ["equivalence"]


def test_a_model_row_and_the_summary_carry_their_timings() -> None:
    times = PhaseTimes((Span("verdict", "eager", 3.0),)).to_json()
    row = ModelResult("m", "m.py:M", "clean", timings=times)
    summary = RepairSummary((row,), "out", 4.0, timings={"verdict": 3.0, "check": 1.0})
    data = summary.to_json()
    assert data["models"][0]["timings"]["totals"] == {"verdict": 3.0}
    assert data["timings"]["totals"] == {"verdict": 3.0, "check": 1.0}
