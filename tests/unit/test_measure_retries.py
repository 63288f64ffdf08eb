"""An inconclusive stage is measured again with twice the iterations, up to the retry budget."""

from __future__ import annotations

from concurrent.futures import Future

from bisector.lab.results import MeasureOptions
from bisector.lab.stage import Lab
from bisector.model.curve import MemoryCurve, Sample
from bisector.model.spec import ModelSpec, build_input_plan
from bisector.probe.types import ProbeOk, ProbeOptions

MB = 1e6


class FakeRunner:
    """Model curves that wander by 4 MB (inconclusive) until the schedule is `settle_at` times
    longer, flat after; controls flat."""

    def __init__(self, settle_at: int) -> None:
        self.settle_at = settle_at
        self.requests = []

    def submit(self, request, extra_key: str = "") -> Future:
        self.requests.append(request)
        scale = request.schedule.profile.repeat_passes // 4
        wobble = 0 if request.control or scale >= self.settle_at else 4 * MB
        samples = tuple(
            Sample(s.phase, dict(s.dims), {"rss": 300 * MB + (wobble if i % 2 else 0), "objects": 10.0})
            for i, s in enumerate(request.schedule.steps)
        )
        f: Future = Future()
        f.set_result(ProbeOk(MemoryCurve(samples), 0.1))
        return f


def test_inconclusive_is_rerun_with_more_iterations_until_it_settles(tmp_path) -> None:
    plan = build_input_plan(["x=B,8"], ["B=1:4"])
    runner = FakeRunner(settle_at=2)
    result = Lab(
        ModelSpec(str(tmp_path / "m.py"), "Net"),
        plan,
        MeasureOptions(retries=2, probe=ProbeOptions()),
        keep=False,
        runner=runner,
    ).stage("eager")
    assert result.kind == "clean" and result.attempts == 2
    assert [r.schedule.profile.repeat_passes for r in runner.requests if not r.control] == [4, 8]


def test_the_retry_budget_bounds_the_reruns(tmp_path) -> None:
    plan = build_input_plan(["x=B,8"], ["B=1:4"])
    runner = FakeRunner(settle_at=99)
    result = Lab(
        ModelSpec(str(tmp_path / "m.py"), "Net"),
        plan,
        MeasureOptions(retries=2, probe=ProbeOptions()),
        keep=False,
        runner=runner,
    ).stage("eager")
    assert result.kind == "inconclusive" and result.attempts == 3
    assert len([r for r in runner.requests if not r.control]) == 3


class NoisyHeapRunner:
    """A clean model whose heap swings +-10 KB from pass to pass: its floor starts above the 4 KB
    eager target and falls as passes are added (1/sqrt(passes))."""

    def __init__(self) -> None:
        self.requests = []

    def submit(self, request, extra_key: str = "") -> Future:
        self.requests.append(request)
        heap, samples, passes = 80e6, [], 0
        shapes = len({s.key() for s in request.schedule.steps if s.phase == "repeat"})
        for i, s in enumerate(request.schedule.steps):
            if s.phase == "repeat" and not request.control:
                k = sum(1 for t in request.schedule.steps[:i] if t.phase == "repeat")
                if k % shapes == 0:
                    passes += 1
                    heap += 10 * 1024 if passes % 2 else -10 * 1024
            samples.append(Sample(s.phase, dict(s.dims), {"rss": 300 * MB, "objects": 10.0, "heap": heap}))
        f: Future = Future()
        f.set_result(ProbeOk(MemoryCurve(tuple(samples)), 0.1))
        return f


def test_more_passes_are_run_until_the_floor_reaches_the_target(tmp_path) -> None:
    plan = build_input_plan(["x=B,8"], ["B=1:16"])
    runner = NoisyHeapRunner()
    result = Lab(
        ModelSpec(str(tmp_path / "m.py"), "Net"),
        plan,
        MeasureOptions(retries=2, floor_targets={"eager": 4096.0}),
        keep=False,
        runner=runner,
    ).stage("eager")
    # The second attempt runs the passes the first one's floor says the target needs (4x, plus 10%).
    assert result.kind == "clean" and result.attempts == 2
    assert result.verdict.floor_bytes_per_call <= 4096
    assert [r.schedule.profile.repeat_passes for r in runner.requests if not r.control] == [4, 16]


def test_a_floor_chase_goes_as_far_as_the_target_needs_past_the_retries(tmp_path) -> None:
    plan = build_input_plan(["x=B,8"], ["B=1:16"])
    runner = NoisyHeapRunner()
    options = MeasureOptions(retries=0, floor_targets={"eager": 1024.0})
    result = Lab(ModelSpec(str(tmp_path / "m.py"), "Net"), plan, options, keep=False, runner=runner).stage("eager")
    assert result.kind == "clean" and result.verdict.floor_bytes_per_call <= 1024
    passes = [r.schedule.profile.repeat_passes for r in runner.requests if not r.control]
    assert passes[0] == 4 and passes[-1] > 16 * 4  # past what 2 doublings could give
    # New shapes grow by 4x at most: the floor per call is the repeated shapes' alone.
    assert max(r.schedule.profile.novel for r in runner.requests) <= 4 * 8


def test_a_floor_not_reached_within_the_budget_is_inconclusive_and_says_so(tmp_path) -> None:
    plan = build_input_plan(["x=B,8"], ["B=1:16"])
    options = MeasureOptions(retries=2, budget_s=0.0, floor_targets={"eager": 4096.0})
    result = Lab(ModelSpec(str(tmp_path / "m.py"), "Net"), plan, options, keep=False, runner=NoisyHeapRunner()).stage(
        "eager"
    )
    assert result.kind == "inconclusive" and result.attempts == 1
    assert result.verdict.floor_bytes_per_call > 4096
    (reason,) = [r for r in result.verdict.reasons if "target" in r]
    assert "floor reached" in reason and "would take ~" in reason and "own per-call noise" in reason


class GrowingNoiseRunner(NoisyHeapRunner):
    """A clean model whose heap swings more the longer it runs (+-10 KB x sqrt(scale)): more passes
    do not lower its floor."""

    def submit(self, request, extra_key: str = "") -> Future:
        self.requests.append(request)
        scale = request.schedule.profile.repeat_passes / 4
        heap, samples, passes = 80e6, [], 0
        shapes = len({s.key() for s in request.schedule.steps if s.phase == "repeat"})
        for i, s in enumerate(request.schedule.steps):
            if s.phase == "repeat" and not request.control:
                k = sum(1 for t in request.schedule.steps[:i] if t.phase == "repeat")
                if k % shapes == 0:
                    passes += 1
                    heap += (10 * 1024 if passes % 2 else -10 * 1024) * scale**0.5
            samples.append(Sample(s.phase, dict(s.dims), {"rss": 300 * MB, "objects": 10.0, "heap": heap}))
        f: Future = Future()
        f.set_result(ProbeOk(MemoryCurve(tuple(samples)), 0.1))
        return f


def test_a_floor_the_noise_holds_up_stops_the_chase_and_says_so(tmp_path) -> None:
    plan = build_input_plan(["x=B,8"], ["B=1:16"])
    runner = GrowingNoiseRunner()
    options = MeasureOptions(retries=2, floor_targets={"eager": 1024.0})
    result = Lab(ModelSpec(str(tmp_path / "m.py"), "Net"), plan, options, keep=False, runner=runner).stage("eager")
    assert result.kind == "inconclusive" and result.attempts == 2
    (reason,) = [r for r in result.verdict.reasons if "target" in r]
    assert "floor reached" in reason and "more passes did not lower it" in reason
    assert "own per-call noise under the toolchain is ±" in reason
