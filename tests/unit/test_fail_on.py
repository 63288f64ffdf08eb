"""--fail-on: which findings fail a run (exit 1), for measure, find, fix and repair."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bisector.cli import EXIT_BY_STATUS, EXIT_CLEAN, EXIT_FOUND, EXIT_UNPROVEN, EXIT_USER
from bisector.common.errors import UserError
from bisector.find.localise import Culprit
from bisector.judge.fail_on import FailOn
from bisector.pipeline.run import Status, _status, find_status, measured_status
from tests.conftest import FIXTURES, run_cli


def stage(kind: str, bounded: bool | None = None) -> SimpleNamespace:
    verdict = SimpleNamespace(bounded=bounded) if kind not in ("failed", "crashed") else None
    return SimpleNamespace(kind=kind, verdict=verdict)


def measured(*stages: SimpleNamespace) -> SimpleNamespace:
    return SimpleNamespace(stages={f"s{i}": s for i, s in enumerate(stages)})


def exit_of(report: SimpleNamespace, policy: str | None = None) -> int:
    return EXIT_BY_STATUS[measured_status(report, FailOn.parse(policy)).value]


def test_the_default_fails_on_leaks_and_unbounded_growth() -> None:
    assert FailOn().kinds == {"leak", "shape-growth:unbounded"} and FailOn().budget is None
    assert exit_of(measured(stage("leak"))) == EXIT_FOUND
    assert exit_of(measured(stage("shape-growth", bounded=True))) == EXIT_CLEAN  # reported with its ceiling
    assert exit_of(measured(stage("shape-growth", bounded=False))) == EXIT_FOUND
    assert exit_of(measured(stage("shape-growth", bounded=None))) == EXIT_FOUND  # not known: unbounded
    assert exit_of(measured(stage("toolchain-leak"))) == EXIT_CLEAN
    assert exit_of(measured(stage("inconclusive"))) == EXIT_UNPROVEN
    assert exit_of(measured(stage("clean"), stage("crashed"))) == EXIT_UNPROVEN


def test_bounded_shape_growth_passes_when_only_unbounded_fails() -> None:
    policy = "leak,shape-growth:unbounded"
    assert exit_of(measured(stage("shape-growth", bounded=True)), policy) == EXIT_CLEAN
    assert exit_of(measured(stage("shape-growth", bounded=False)), policy) == EXIT_FOUND
    assert exit_of(measured(stage("shape-growth", bounded=None)), policy) == EXIT_FOUND  # not known: unbounded
    assert exit_of(measured(stage("leak")), policy) == EXIT_FOUND


def test_listed_kinds_that_are_not_failures_by_default() -> None:
    assert exit_of(measured(stage("toolchain-leak")), "toolchain-leak") == EXIT_FOUND
    assert exit_of(measured(stage("inconclusive")), "leak,inconclusive") == EXIT_FOUND
    assert exit_of(measured(stage("leak")), "shape-growth") == EXIT_CLEAN  # reported, accepted


def test_values_are_comma_separated_and_repeatable_and_checked() -> None:
    assert FailOn.parse(["leak", "shape-growth:bounded,toolchain-leak"]).kinds == {
        "leak",
        "shape-growth:bounded",
        "toolchain-leak",
    }
    assert FailOn.parse(None) == FailOn.parse([]) == FailOn()
    with pytest.raises(UserError, match="--fail-on 'leek'"):
        FailOn.parse("leek")


def culprit(kind: str, bounded: bool | None = None, stage_: str = "eager") -> Culprit:
    return Culprit("a", stage_, kind, True, "", {"bounded": bounded}, (), "")


def test_find_fails_only_on_culprits_the_policy_lists() -> None:
    bounded = culprit("shape-growth", bounded=True)
    report = SimpleNamespace(culprits=[bounded], measure=measured(stage("shape-growth", bounded=True)), complete=True)
    assert find_status(report, FailOn.parse("leak,shape-growth")) == Status.UNFIXED
    assert find_status(report) == Status.CLEAN
    export_fails = culprit("unsupported-op", stage_="export")  # not growth: always the user's to fix
    report = SimpleNamespace(culprits=[export_fails], measure=measured(stage("failed")), complete=True)
    assert find_status(report, FailOn.parse("leak")) == Status.UNFIXED


def test_fix_needs_a_kept_fix_only_for_failing_culprits() -> None:
    leak, shape = culprit("leak"), culprit("shape-growth", bounded=True)
    shape = Culprit("b", "eager", shape.kind, True, "", shape.figures, (), "")
    found = SimpleNamespace(culprits=[leak, shape], measure=measured(stage("leak")), complete=True)
    fix_for_leak = SimpleNamespace(region="a", stage="eager")
    report = SimpleNamespace(fixed=lambda c: c.region == "a")
    # the shape growth is unfixed
    assert _status(found, report, (fix_for_leak,), FailOn.parse("leak,shape-growth")) == Status.UNFIXED
    assert _status(found, report, (fix_for_leak,), FailOn()) == Status.FIXED


def test_the_cli_refuses_an_unknown_kind_in_one_line() -> None:
    done = run_cli("measure", f"{FIXTURES / 'crashers.py'}:Fine", "--input", "x=B,8", "--fail-on", "lek")
    assert done.returncode == EXIT_USER
    assert done.stderr.strip().count("\n") == 0 and "--fail-on 'lek'" in done.stderr


class FakeCheck:
    """The pytest plugin's check over a made-up report: no probe runs."""

    def __new__(cls, *stages: SimpleNamespace):
        from bisector.pytest_plugin import MemoryCheck

        check = MemoryCheck(lambda: None)
        report = SimpleNamespace(
            stages={f"s{i}": s for i, s in enumerate(stages)},
            model=SimpleNamespace(label="m"),
            verdict=max((s.kind for s in stages), default="clean"),
        )
        check.measure = lambda *a, **k: report  # type: ignore[method-assign]
        return check


def grown(kind: str, bounded: bool | None = None) -> SimpleNamespace:
    v = SimpleNamespace(
        bounded=bounded,
        growth_bytes_per_call=1e6,
        growth_bytes_per_new_shape=1e6,
        objects_per_call=0,
        baseline_bytes_per_call=0.0,
    )
    return SimpleNamespace(kind=kind, verdict=v)


def test_the_pytest_plugin_takes_the_same_policy() -> None:
    bounded = grown("shape-growth", bounded=True)
    with pytest.raises(AssertionError, match="shape-growth"):
        FakeCheck(bounded).assert_no_leak("m.py:Net", fail_on="leak,shape-growth")
    FakeCheck(bounded).assert_no_leak("m.py:Net")
    with pytest.raises(AssertionError, match="toolchain-leak"):
        FakeCheck(grown("toolchain-leak")).assert_no_leak("m.py:Net", fail_on=["leak", "toolchain-leak"])
    with pytest.raises(UserError, match="--fail-on 'lek'"):
        FakeCheck(grown("leak")).assert_no_leak("m.py:Net", fail_on="lek")
