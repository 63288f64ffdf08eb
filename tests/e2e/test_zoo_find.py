"""Every sample model: its stated verdict in every stage it names, and its culprits found
exactly (dotted path, stage, kind), with no extra culprit.

The full check, every stage five times over with different seeds, is bench/localize.py; here
each sample runs once, and searches through torch's default (torch.export-based) exporter, which
cost ~1 s per export and so minutes per search, run for one sample only (forward_hook)."""

from __future__ import annotations

import pytest

from bisector import api
from bisector.find import find
from bisector.verdict import CLEAN, LEAK, SHAPE_GROWTH, TOOLCHAIN_LEAK
from bisector.zoo import zoo
from tests.conftest import SAMPLES, has_cuda

pytestmark = pytest.mark.probe
TRUTHS = zoo(SAMPLES)
GPU = pytest.mark.skipif(not has_cuda(), reason="needs a CUDA device; verified on a GPU machine when one is lent")
DYNAMO_EXPORT_SEARCHED = {"forward_hook"}


def test_the_zoo_has_every_kind_the_design_needs() -> None:
    kinds = {(stage, kind) for t in TRUTHS for stage, kind in t.stages.items()}
    assert {
        ("eager", LEAK),
        ("export", LEAK),
        ("eager", SHAPE_GROWTH),
        ("inference", SHAPE_GROWTH),
        ("inference", CLEAN),
    } <= kinds
    assert any(t.gpu_only for t in TRUTHS)
    assert sum(1 for t in TRUTHS if "hf_" in t.path and t.culprits) >= 2
    assert sum(1 for t in TRUTHS if "hf_" in t.path and not t.culprits) >= 2


def _stages(truth) -> list[str]:
    slow = truth.exporter in (None, "dynamo") and truth.name not in DYNAMO_EXPORT_SEARCHED
    return [s for s in truth.stages if not (s == "export" and slow and truth.stages[s] != CLEAN)]


@pytest.mark.parametrize(
    "truth", [pytest.param(t, marks=[GPU] if t.gpu_only else []) for t in TRUTHS], ids=[t.name for t in TRUTHS]
)
def test_sample_verdicts_and_culprits(truth, pool, tmp_path) -> None:
    stages = _stages(truth)
    prepared = api.prepare(
        truth.target, truth.inputs, truth.dims, stages=stages, exporter=truth.exporter, device=truth.device
    )
    report = find(prepared.model, prepared.plan, prepared.options, run_dir=tmp_path, pool=pool)
    got = {s: report.measure.stages[s].kind for s in stages}
    # "clean" states the model's code: growth the toolchain's own files keep is reported apart.
    got = {s: CLEAN if k == TOOLCHAIN_LEAK and truth.stages[s] == CLEAN else k for s, k in got.items()}
    assert got == {s: truth.stages[s] for s in stages}, {
        s: r.verdict.reasons if r.verdict else r.failure for s, r in report.measure.stages.items()
    }
    for s in stages:
        v = report.measure.stages[s].verdict
        assert v is not None and (v.floor_bytes_per_call is not None or v.growth_metric != "heap")
        if v.kind == TOOLCHAIN_LEAK:  # shown apart, with the toolchain's own file
            assert v.owners and v.owners["repeat"]["sites"]["toolchain"], v.owners
    # A toolchain-leak's root culprit carries its workarounds (find.py): stated clean, not a culprit.
    found = sorted((c.region, c.stage, c.kind) for c in report.culprits if c.kind != TOOLCHAIN_LEAK)
    expected = sorted((c["region"], c["stage"], c["kind"]) for c in truth.culprits if c["stage"] in stages)
    assert found == expected
    assert report.complete
    for c in report.culprits:
        assert c.hint
        if c.kind == LEAK:
            assert (c.figures.get("objects_per_call") or 0) >= 1 or c.figures.get("growth_bytes_per_call", 0) > 0
