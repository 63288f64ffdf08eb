"""Every sample model: its stated verdict in every stage it names, and its culprits found
exactly (dotted path, stage, kind), with no extra culprit.

The full check, every stage five times over with different seeds, is bench/localize.py; here
each sample runs once, and some only under `make test-all` (marked slow), where the default run
makes the same find elsewhere or the same kind of verdict on another sample:

- A search through torch's default (torch.export-based) exporter costs ~1 s per export and so a
  minute per search: it runs for one sample (forward_hook's export stage), as a slow test.
- That exporter's verdict on a clean export (a toolchain-leak the model's code has no share in,
  four probes, traced ones included) is most of a clean sample's find: the default run makes it on
  clean_cnn; clean_transformer's, hf_bert's, hf_gpt2's and list_append's are slow tests of their
  own (their eager and inference verdicts stay in the default run).
- Three samples' finds are made, with the same inputs, by tests of the commands that run them:
  see COVERED_ELSEWHERE.
"""

from __future__ import annotations

import pytest

from bisector import api
from bisector.find.localise import find
from bisector.judge.verdict import CLEAN, LEAK, SHAPE_GROWTH, TOOLCHAIN_LEAK
from bisector.model.zoo import zoo
from tests.conftest import SAMPLES, has_cuda

pytestmark = pytest.mark.probe
TRUTHS = zoo(SAMPLES)
GPU = pytest.mark.skipif(not has_cuda(), reason="needs a CUDA device; verified on a GPU machine when one is lent")
DYNAMO_EXPORT_SEARCHED = {"forward_hook"}
DYNAMO_EXPORT_VERDICT_SLOW = {"clean_transformer", "hf_bert", "hf_gpt2", "list_append"}
# Sample -> the default test that makes its find (same inputs and dims, the stage that has the
# culprit) and checks the culprit; here they run under `make test-all` only.
COVERED_ELSEWHERE = {
    "hf_bert:LeakyNet": "test_cli_find.py::test_ctrl_c_keeps_what_finished_and_a_rerun_resumes",
    "native_leak": "test_reports.py::test_repair_writes_an_index_and_a_bundle_whose_repro_shows_the_native_leak",
    "shape_cache": "test_fix.py::test_shape_cache_is_bounded",
}


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


def _dynamo_search(truth) -> bool:
    """Whether finding this sample's culprits means a search through the torch.export-based exporter."""
    return truth.exporter in (None, "dynamo") and truth.stages.get("export", CLEAN) != CLEAN


def _params() -> list:
    """(truth, the stages its find measures) for each sample, with the slow ones marked."""
    params = []
    for t in TRUTHS:
        marks = [GPU] if t.gpu_only else []
        slow = [*marks, pytest.mark.slow]
        stages = list(t.stages)
        if "export" in stages and (_dynamo_search(t) or t.name in DYNAMO_EXPORT_VERDICT_SLOW):
            stages.remove("export")
            if t.name in DYNAMO_EXPORT_SEARCHED:
                # The same find with the export stage searched too: all its stages, one find.
                params.append(pytest.param(t, list(t.stages), marks=slow, id=f"{t.name}:dynamo-export"))
            elif t.name in DYNAMO_EXPORT_VERDICT_SLOW:
                params.append(pytest.param(t, ["export"], marks=slow, id=f"{t.name}:dynamo-export"))
        params.append(pytest.param(t, stages, marks=slow if t.name in COVERED_ELSEWHERE else marks, id=t.name))
    return params


@pytest.mark.parametrize(("truth", "stages"), _params())
def test_sample_verdicts_and_culprits(truth, stages, pool, tmp_path) -> None:
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
