"""Every sample model gets the verdict its file states, in every stage it names."""

from __future__ import annotations

import pytest

from bisector import api
from bisector.measure import measure
from bisector.verdict import CLEAN, LEAK, SHAPE_GROWTH
from bisector.zoo import zoo
from tests.conftest import SAMPLES, has_cuda

pytestmark = pytest.mark.probe
TRUTHS = zoo(SAMPLES)


def test_the_zoo_has_every_kind_the_design_needs() -> None:
    kinds = {(stage, kind) for t in TRUTHS for stage, kind in t.stages.items()}
    assert {("eager", LEAK), ("export", LEAK), ("eager", SHAPE_GROWTH), ("inference", SHAPE_GROWTH), ("inference", CLEAN)} <= kinds
    assert any(t.gpu_only for t in TRUTHS)
    assert len(TRUTHS) >= 10


GPU = pytest.mark.skipif(not has_cuda(), reason="needs a CUDA device; verified on a GPU machine when one is lent")


@pytest.mark.parametrize(
    "truth", [pytest.param(t, marks=[GPU] if t.gpu_only else []) for t in TRUTHS], ids=[t.name for t in TRUTHS]
)
def test_sample_gets_its_stated_verdicts(truth, pool) -> None:
    prepared = api.prepare(truth.target, truth.inputs, truth.dims, stages=list(truth.stages), exporter=truth.exporter, device=truth.device)
    report = measure(prepared.model, prepared.plan, prepared.options, pool=pool)
    got = {stage: report.stages[stage].kind for stage in truth.stages}
    assert got == truth.stages, {s: r.verdict.reasons if r.verdict else r.failure for s, r in report.stages.items()}
    for stage, kind in truth.stages.items():
        v = report.stages[stage].verdict
        if kind == LEAK:
            assert (v.objects_per_call or 0) >= 1 or v.growth_bytes_per_call > 0
        if kind == CLEAN:
            assert v.confidence > 0
