"""The lab's questions against a fake runner (no probe runs): regions judged against the scaled
control, regions the model lacks, the retry with twice the iterations, and derived labs shared."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from bisector.lab import stage as lab_module
from bisector.lab.results import MeasureOptions, StageResult
from bisector.lab.stage import Lab
from bisector.model.capture import capture_file
from bisector.model.curve import MemoryCurve, Sample
from bisector.model.spec import ModelSpec, build_input_plan
from bisector.probe.types import ProbeKind, ProbeOk

TREE = [
    {"path": "", "type": "Net", "children": ["a", "b"], "subtree_hash": "r"},
    {"path": "a", "type": "Leaky", "subtree_hash": "ha"},
    {"path": "b", "type": "Clean", "subtree_hash": "hb"},
]


def done(result: object) -> Future:
    f: Future = Future()
    f.set_result(result)
    return f


class FakeRunner:
    """Captures write their files and return the tree; region "a" keeps one object per call;
    a group run `wobble_until` times shorter than needed wanders (inconclusive)."""

    def __init__(self, wobble_until: int = 1) -> None:
        self.requests: list = []
        self.probes = self.reused = self.reused_controls = 0
        self.wobble_until = wobble_until

    def submit(self, request, extra_key: str = "") -> Future:
        self.requests.append(request)
        if request.kind == ProbeKind.CAPTURE:
            for step in request.schedule.steps:
                path = capture_file(request.capture, step.dims)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("inputs")
            return done(ProbeOk(MemoryCurve(()), 0.1, data={"tree": TREE, "unsaved": {}}))
        scale = max(1, request.schedule.profile.repeat_passes // 4)
        leaks = not request.control and "a" in request.regions
        wobble = 0 if request.control or scale >= self.wobble_until else 40e6
        samples, objects = [], 100.0
        for i, s in enumerate(request.schedule.steps):
            objects += 1.0 if leaks and s.phase == "repeat" else 0.0
            rss = 300e6 + (wobble if i % 2 else 0)
            samples.append(Sample(s.phase, dict(s.dims), {"rss": rss, "objects": objects}))
        return done(ProbeOk(MemoryCurve(tuple(samples)), 0.1))


def make_lab(tmp_path, runner: FakeRunner) -> Lab:
    plan = build_input_plan(["x=B,8"], ["B=1:4"])
    return Lab(
        ModelSpec(str(tmp_path / "m.py"), "Net"), plan, MeasureOptions(retries=2), run_dir=tmp_path, runner=runner
    )


ROOT = StageResult("eager", "leak")  # no control kept: the lab measures one


def test_a_region_that_keeps_objects_leaks_and_one_that_does_not_is_clean(tmp_path) -> None:
    runner = FakeRunner()
    lab = make_lab(tmp_path, runner)
    assert lab.regions("eager", ("a",), ROOT).kind == "leak"
    assert lab.regions("eager", ("b",), ROOT).kind == "clean"
    assert lab.tree is not None and set(lab.tree.regions) == {"", "a", "b"}
    captures = [r for r in runner.requests if r.kind == ProbeKind.CAPTURE]
    assert len(captures) == 1  # recorded once, reused by every question after


def test_a_region_the_model_lacks_is_a_failed_outcome_not_an_error(tmp_path) -> None:
    outcome = make_lab(tmp_path, FakeRunner()).regions("eager", ("zzz",), ROOT)
    assert outcome.kind == "failed" and "has no 'zzz'" in outcome.message


def test_regions_asked_together_run_in_one_probe_and_leak_if_one_does(tmp_path) -> None:
    runner = FakeRunner()
    assert make_lab(tmp_path, runner).regions("eager", ("a", "b"), ROOT).kind == "leak"
    weights = [r for r in runner.requests if r.kind == ProbeKind.MEASURE and not r.control]
    assert weights and weights[-1].regions == ("a", "b")


def test_an_unsure_region_is_asked_again_with_twice_the_iterations(tmp_path) -> None:
    runner = FakeRunner(wobble_until=2)
    outcome = make_lab(tmp_path, runner).regions("eager", ("b",), ROOT)
    assert outcome.kind == "clean"
    passes = [r.schedule.profile.repeat_passes for r in runner.requests if r.regions == ("b",) and not r.control]
    assert passes[1] == 2 * passes[0]


def test_a_derived_lab_is_one_per_configuration_and_shares_the_run_directory(tmp_path, monkeypatch) -> None:
    class NoPool:
        def __init__(self, *a, **k) -> None: ...

        def close(self) -> None: ...

    monkeypatch.setattr(lab_module, "ProbePool", NoPool)
    lab = make_lab(tmp_path, FakeRunner())
    one = lab.derive(overrides={"session_options": {"enable_mem_pattern": False}})
    assert lab.derive(overrides={"session_options": {"enable_mem_pattern": False}}) is one
    other = lab.derive(overrides={"session_options": {"enable_cpu_mem_arena": False}})
    assert other is not one and other.run is not None and lab.run is not None
    assert other.run.parent == lab.run.parent  # runs/ of the same run directory
    assert other.options.probe.session_options == {"enable_cpu_mem_arena": False}
    lab.close()


def test_a_lab_without_a_run_directory_cannot_record_inputs(tmp_path) -> None:
    plan = build_input_plan(["x=B,8"], ["B=1:4"])
    lab = Lab(ModelSpec(str(tmp_path / "m.py"), "Net"), plan, MeasureOptions(), keep=False, runner=FakeRunner())
    with pytest.raises(Exception, match="no run directory"):
        lab.regions("eager", ("a",), ROOT)
