"""Weights grown in forward (a ModuleList or ParameterList gaining entries) are reported as not
fixable automatically, with the reason and what to change, in the notes and the JSON."""

from __future__ import annotations

from types import SimpleNamespace

from bisector.fix.unfixable import not_fixable
from bisector.pipeline.run import FixOutcome, Status


def _culprit(*rows: dict) -> SimpleNamespace:
    return SimpleNamespace(region="head", stage="eager", figures=SimpleNamespace(retention=list(rows)))


ADAPTERS = {
    "root": "module-attr",
    "path": "head.adapters",
    "container": "ModuleList",
    "entries_per_call": 0.0,
    "entries_per_new_shape": 1.0,
    "mutated_at": ["model.py:21"],
}


def test_a_grown_module_container_is_not_fixable_with_a_reason_and_a_suggestion() -> None:
    widths = {**ADAPTERS, "path": "head.widths", "container": "list"}
    nf = not_fixable(_culprit(widths, ADAPTERS))  # the weights, even when a plain list leads the paths
    assert nf is not None
    assert (nf.region, nf.stage, nf.path, nf.container) == ("head", "eager", "head.adapters", "ModuleList")
    assert "gains submodules per new input shape at model.py:21" in nf.reason
    assert "__init__" in nf.suggestion
    assert nf.note().startswith("head (eager): not fixable automatically: head.adapters (ModuleList)")
    params = not_fixable(
        _culprit({**ADAPTERS, "container": "ParameterList", "entries_per_new_shape": 0.0, "entries_per_call": 1.0})
    )
    assert params is not None and "gains parameters per call" in params.reason


def test_other_containers_and_bounded_ones_are_left_to_the_fixers() -> None:
    assert not_fixable(_culprit({**ADAPTERS, "container": "dict"})) is None
    assert not_fixable(_culprit({**ADAPTERS, "entries_per_new_shape": 0.0})) is None
    assert not_fixable(SimpleNamespace(region="", stage="eager", figures=SimpleNamespace(retention=None))) is None


def test_the_fix_json_lists_what_is_not_fixable() -> None:
    nf = not_fixable(_culprit(ADAPTERS))
    data = FixOutcome(Status.UNFIXED, notes=(nf.note(),), not_fixable=(nf,)).to_json()
    assert data["not_fixable"] == [nf.to_json()]
    assert data["patch_notes"] == [nf.note()]
    assert "not_fixable" not in FixOutcome(Status.UNFIXED).to_json()
