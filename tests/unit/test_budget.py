"""Bounded shape-growth judged against a budget (issue 21, item 1): the ceiling projected from the
measured curve, over and under --budget, the default policy, and how fixes are judged against it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bisector.common.errors import UserError
from bisector.judge.ceiling import ceilings, describe_dims, project, stage_ceilings
from bisector.judge.choice import choose, costs_more_than_it_saves, not_chosen, rank
from bisector.judge.fail_on import FailOn
from bisector.judge.verdict import Verdict
from bisector.lab.results import MeasureReport, StageResult
from bisector.model.curve import MemoryCurve, Sample
from bisector.model.kinds import Kind
from bisector.model.spec import InputPlan
from bisector.pipeline.run import Status, find_status, measured_status
from bisector.repairs.results import ModelResult
from tests.conftest import FIXTURES, run_cli

MB = 1e6
RANGES = {"B": (1, 8), "H": (32, 160), "W": (32, 160)}


def arena_curve(largest_run: bool = True, gpu: bool = False) -> MemoryCurve:
    """An arena that grows with each larger input and holds it: 300 MB over the repeated (small)
    shapes, then +4 MB per larger novel shape, flat on the smaller shapes of `within`."""
    samples = [Sample("warmup", {"B": 1, "H": 40, "W": 40}, {"rss": 300 * MB})]
    samples += [Sample("repeat", {"B": 2, "H": 64, "W": 64}, {"rss": 300 * MB}) for _ in range(6)]
    novel = [(2, 80, 80), (4, 96, 96), (5, 112, 112), (6, 128, 128), (8, 160, 160)]
    if not largest_run:
        novel = novel[:-1]
    for i, (b, h, w) in enumerate(novel, 1):
        values = {"rss": (300 + 4 * i) * MB}
        if gpu:
            values["gpu"] = (1000 + 10 * i) * MB
        samples.append(Sample("novel", {"B": b, "H": h, "W": w}, values))
    top = samples[-1].values
    samples += [Sample("within", {"B": 3, "H": 50 + i, "W": 60}, dict(top)) for i in range(4)]
    return MemoryCurve(samples=tuple(samples))


def bounded_stage(curve: MemoryCurve, stage: str = "inference") -> StageResult:
    verdict = Verdict(Kind.SHAPE_GROWTH, 0.0, 4 * MB, 0.0, 0.0, 1e5, bounded=True)
    return StageResult(stage, Kind.SHAPE_GROWTH, verdict=verdict, curve=curve)


def report_of(*stages: StageResult) -> MeasureReport:
    plan = InputPlan(inputs=(), dims=RANGES)
    return MeasureReport(SimpleNamespace(label="m"), plan, {s.stage: s for s in stages}, 0, 0.0, None)  # type: ignore[arg-type]


def test_the_ceiling_is_the_peak_at_the_largest_declared_input_and_the_growth_to_it() -> None:
    rss, gpu = ceilings(arena_curve(gpu=True).samples, RANGES)
    assert rss.metric == "rss" and rss.measured and dict(rss.at) == {"B": 8, "H": 160, "W": 160}
    assert rss.peak_bytes == pytest.approx(320 * MB) and rss.growth_bytes == pytest.approx(20 * MB)
    assert rss.describe() == "settles at +20.0 MB, peak 320.0 MB at B=8, H=W=160"
    assert gpu.metric == "gpu" and gpu.peak_bytes == pytest.approx(1050 * MB)
    assert "GPU" in gpu.describe()
    # The samples' JSON projects the same way (the batch summary and the HTML report read JSON).
    assert project([s.to_json() for s in arena_curve().samples], RANGES) == rss


def test_a_largest_input_never_run_is_extrapolated_along_the_curve() -> None:
    got = project(arena_curve(largest_run=False).samples, RANGES)
    assert got is not None and not got.measured
    # 4 MB per step of the novel shapes' element count, extended to B=8, H=W=160: above what was measured.
    assert got.peak_bytes > 316 * MB
    assert "(projected)" in got.describe()


def test_only_bounded_shape_growth_has_a_ceiling() -> None:
    curve = arena_curve()
    assert stage_ceilings(bounded_stage(curve), RANGES)
    leak = StageResult("eager", Kind.LEAK, verdict=Verdict(Kind.LEAK, 1e6, None, 0.0, None, 0.0), curve=curve)
    assert stage_ceilings(leak, RANGES) == ()
    unbounded = StageResult(
        "eager",
        Kind.SHAPE_GROWTH,
        verdict=Verdict(Kind.SHAPE_GROWTH, 0.0, 4 * MB, 0.0, 0.0, 1e5, bounded=False),
        curve=curve,
    )
    assert stage_ceilings(unbounded, RANGES) == ()


def test_describe_dims_groups_symbols_of_one_size() -> None:
    assert describe_dims({"W": 160, "B": 8, "H": 160}) == "B=8, H=W=160"


def test_bounded_growth_within_the_budget_is_clean_and_over_it_fails() -> None:
    report = report_of(bounded_stage(arena_curve()))  # peak 320 MB
    assert measured_status(report) == Status.CLEAN  # the default: reported with its ceiling
    assert measured_status(report, FailOn.parse(None, "400MB")) == Status.CLEAN
    assert measured_status(report, FailOn.parse(None, "300MB")) == Status.UNFIXED
    # The budget judges shape-growth's ceiling, whatever kinds are listed.
    assert measured_status(report, FailOn.parse("leak", "300MB")) == Status.UNFIXED
    culprit = SimpleNamespace(stage="inference", kind=Kind.SHAPE_GROWTH, figures={"bounded": True})
    found = SimpleNamespace(culprits=[culprit], measure=report, complete=True)
    assert find_status(found, FailOn.parse(None, "400MB")) == Status.CLEAN
    assert find_status(found, FailOn.parse(None, "300MB")) == Status.UNFIXED


def test_the_budget_is_a_positive_size() -> None:
    assert FailOn.parse(None, "2GB").budget == 2e9
    assert FailOn().with_budget(None) == FailOn() and FailOn().with_budget("1MB").budget == 1e6
    with pytest.raises(UserError, match="--budget"):
        FailOn.parse(None, "lots")
    with pytest.raises(UserError, match="positive"):
        FailOn.parse(None, 0)


def test_the_cli_refuses_a_bad_budget_in_one_line() -> None:
    done = run_cli("measure", f"{FIXTURES / 'crashers.py'}:Fine", "--input", "x=B,8", "--budget", "lots")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--budget" in done.stderr


def fix(name: str, peak: float | None, budget: float | None, saved: float = 1.0) -> SimpleNamespace:
    headroom = None if budget is None or peak is None else budget - peak
    return SimpleNamespace(
        fixer=name,
        summary=name,
        kept=True,
        removes_behaviour="",
        upfront_bytes=50 * MB,  # a warm-up's arena: more up front than the growth it prevents
        prevented_bytes=20 * MB,
        saved=saved,
        size=1,
        budget_bytes=budget,
        peak_after_bytes=peak,
        headroom_bytes=headroom,
    )


def test_against_a_budget_fixes_are_judged_by_how_far_under_it_they_bring_the_peak() -> None:
    # Without a budget a warm-up that holds more up front than it prevents is not chosen.
    assert costs_more_than_it_saves(fix("warmup", None, None))
    assert choose([fix("warmup", None, None)]) is None
    # Against a budget: a fix that brings the peak under it is worth it; one that leaves it over is not.
    under, close, over = (
        fix("a", 250 * MB, 300 * MB),
        fix("b", 290 * MB, 300 * MB, saved=9.0),
        fix("c", 310 * MB, 300 * MB),
    )
    assert not costs_more_than_it_saves(under) and costs_more_than_it_saves(over)
    assert [e.fixer for e in rank([over, close, under])] == ["a", "b", "c"]  # most headroom first
    assert choose(rank([over, close, under])).fixer == "a"
    assert choose([over]) is None and "over the budget" in not_chosen([over])


def test_the_summary_row_shows_the_ceiling_and_the_budget() -> None:
    ceiling = [c.to_json() for c in ceilings(arena_curve().samples, RANGES)]
    row = ModelResult(
        "m",
        "m.py:Net",
        "clean",
        stages={"eager": "clean", "inference": "shape-growth"},
        ceilings={"inference": ceiling},
        budget=400 * MB,
    )
    assert row.stages_text() == (
        "eager clean, inference shape-growth (bounded: settles at +20.0 MB, peak 320.0 MB at B=8, H=W=160, "
        "within the budget 400.0 MB)"
    )
    assert row.to_json()["ceilings"]["inference"][0]["peak_bytes"] == 320 * MB


def test_against_a_budget_a_fix_that_brings_the_peak_under_it_is_kept_though_growth_remains() -> None:
    from bisector.find.localise import Culprit
    from bisector.fix.decide import decide
    from bisector.judge.search import Outcome

    c = Culprit("", "inference", Kind.SHAPE_GROWTH, False, "", {"growth_bytes_per_new_shape": 12e6}, (), "")
    after = Outcome(Kind.SHAPE_GROWTH, {"growth_bytes_per_new_shape": 7.6e6})  # no arena: less, not flat
    same = lambda: {"equivalent": True, "max_abs_diff": 0.0, "max_rel_diff": 0.0}  # noqa: E731
    before = {"growth_bytes_per_new_shape": 12e6}
    dropped = decide(c, after, after, before, False, False, same)
    assert not dropped["kept"] and "not flat enough" in dropped["reason"]
    kept = decide(c, after, after, before, False, False, same, under_budget=500 * MB)
    assert kept["kept"] and "peak under the budget 500.0 MB" in kept["reason"]
    differs = lambda: {"equivalent": False, "why": "max |diff| 1"}  # noqa: E731
    assert not decide(c, after, after, before, False, False, differs, under_budget=500 * MB)["kept"]
