"""One stage that cannot run does not sink the model (issue 21, item 4): a model whose export
raises and whose eager forward leaks is found and fixed in eager, and its export is reported as
that stage's error, as repair's summary does."""

from __future__ import annotations

import pytest

from bisector import api
from bisector.judge.fail_on import FailOn
from bisector.pipeline import run as pipeline
from tests.conftest import FIXTURES

pytestmark = pytest.mark.probe


def test_an_export_that_raises_leaves_the_eager_leak_found_and_fixed(pool, tmp_path) -> None:
    p = api.prepare(
        f"{FIXTURES / 'export_fails.py'}:Net", ["x=B,32"], [], stages=["eager", "export"], run_dir=str(tmp_path)
    )
    # As repair asks: a stage that cannot run used to end the model as an error.
    request = pipeline.FixRequest(patch=False, unmeasured_is_error=True, fail_on=FailOn(), fixers=("append-only",))
    outcome = pipeline.fix(p, request, pool=pool)
    assert outcome.found is not None and outcome.found.measure.stages["eager"].kind == "leak"
    assert [(c.region, c.stage) for c in outcome.found.culprits] == [("rec", "eager")]
    assert outcome.status == pipeline.Status.FIXED
    assert set(outcome.stage_errors) == {"export"} and "cannot be exported" in outcome.stage_errors["export"]
    assert outcome.status_text().startswith("fixed (export: error: ")
    assert outcome.to_json()["stage_errors"] == dict(outcome.stage_errors)
