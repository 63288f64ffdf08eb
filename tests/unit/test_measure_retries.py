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


class NativeWanderRunner:
    """A model whose heap grows `rate` bytes a call over the repeated shapes on the schedules of
    the seeds in `grows_on` and not on others, with nothing the traced probe can place: no Python
    allocation, no native stack (as torch's own wander on a clean GPT-2 block, or a model's malloc
    through dlsym that no stack sees)."""

    def __init__(self, rate: float, grows_on: set[int]) -> None:
        self.rate, self.grows_on = rate, grows_on
        self.requests = []

    def submit(self, request, extra_key: str = "") -> Future:
        self.requests.append(request)
        grows = not request.control and request.schedule.seed in self.grows_on
        heap, samples = 80e6, []
        for s in request.schedule.steps:
            if s.phase == "repeat" and grows:
                heap += self.rate
            samples.append(Sample(s.phase, dict(s.dims), {"rss": 300 * MB, "objects": 10.0, "heap": heap}))
        meta = {}
        if request.options.owners:
            rep = {"calls": 1, "heap": self.rate, "groups": {}, "native": self.rate, "python_malloc": 0.0, "sites": {}}
            meta = {"owners": {"repeat": rep}}
        f: Future = Future()
        f.set_result(ProbeOk(MemoryCurve(tuple(samples), meta=meta), 0.1))
        return f


def _native_stage(tmp_path, runner: NativeWanderRunner, target: float = 512.0):
    plan = build_input_plan(["x=B,8"], ["B=1:16"])
    options = MeasureOptions(retries=0, seed=0, floor_targets={"eager": target})
    return Lab(ModelSpec(str(tmp_path / "m.py"), "Net"), plan, options, keep=False, runner=runner).stage("eager")


def _plain_seeds(runner: NativeWanderRunner) -> list[int]:
    return [r.schedule.seed for r in runner.requests if not r.control and not r.options.owners]


def test_a_small_unplaced_native_leak_not_seen_on_a_second_schedule_is_inconclusive(tmp_path) -> None:
    runner = NativeWanderRunner(600.0, grows_on={0})
    result = _native_stage(tmp_path, runner)
    assert _plain_seeds(runner) == [0, 1]  # measured again on seed 1's schedule
    assert result.kind == "inconclusive" and result.verdict.kind == "inconclusive"
    (reason,) = [r for r in result.verdict.reasons if "second schedule" in r]
    assert "seed 1" in reason and "wanders" in reason and "cannot be told from it" in reason
    # The floor stated is the first schedule's upper bound: nothing above it was seen.
    assert result.verdict.floor_bytes_per_call >= 600.0
    assert result.probes == 6  # model, control, their traced twins, and the second schedule's two


def test_a_small_unplaced_native_leak_that_grows_again_stays_a_leak(tmp_path) -> None:
    runner = NativeWanderRunner(600.0, grows_on={0, 1})
    result = _native_stage(tmp_path, runner)
    assert _plain_seeds(runner) == [0, 1]
    assert result.kind == "leak"
    assert any("grew again on a second schedule (seed 1)" in r for r in result.verdict.reasons)


def test_a_large_native_leak_or_a_high_target_needs_no_second_schedule(tmp_path) -> None:
    large = NativeWanderRunner(4 * 1024.0, grows_on={0})  # no toolchain wander seen comes near 4 KB a call
    assert _native_stage(tmp_path, large).kind == "leak" and _plain_seeds(large) == [0]
    at_default = NativeWanderRunner(600.0, grows_on={0})  # under the 2 KB target it is not called a leak at all
    assert _native_stage(tmp_path, at_default, target=2048.0).kind == "clean" and _plain_seeds(at_default) == [0]


def test_a_second_schedule_that_grows_in_too_few_passes_still_shows_the_leak() -> None:
    from dataclasses import replace

    from bisector.judge.attribution import grew_again, second_schedule
    from tests.unit.test_owners import heap_leak

    first = replace(heap_leak(700.0), floor_bytes_per_call=300.0, error_bytes_per_call=100.0)
    unsure = replace(first, kind="inconclusive", growth_bytes_per_call=690.0, error_bytes_per_call=120.0)
    assert grew_again(unsure, 512.0)
    assert second_schedule(first, unsure, 1, "run", 512.0).kind == "leak"
    wander = replace(unsure, growth_bytes_per_call=266.0, error_bytes_per_call=80.0, floor_bytes_per_call=200.0)
    assert not grew_again(wander, 512.0)  # under the target on its interval: not the leak again
    assert second_schedule(first, wander, 1, "run", 512.0).kind == "inconclusive"


def test_a_library_site_with_a_few_bytes_does_not_place_a_native_leak() -> None:
    from dataclasses import replace

    from bisector.judge.attribution import needs_second_schedule
    from tests.unit.test_owners import heap_leak

    def owners(library_bytes: float) -> dict:
        site = [{"where": "transformers/models/gpt2/modeling_gpt2.py:120", "bytes": library_bytes}]
        groups = {"model": 0.0, "libraries": library_bytes, "toolchain": 0.0}
        return {"repeat": {"calls": 1, "groups": groups, "python_malloc": library_bytes, "sites": {"libraries": site}}}

    # A clean GPT-2 block under load: +1.0 KB/call, transformers' files keep 40 B of it.
    wander = replace(heap_leak(1024.0), owners=owners(40.0))
    assert needs_second_schedule(wander, 1024.0)
    python = replace(heap_leak(1024.0), owners=owners(900.0))  # its libraries keep most of it: theirs
    assert not needs_second_schedule(python, 1024.0)


def test_an_export_leak_near_twice_its_target_is_not_measured_again() -> None:
    from dataclasses import replace

    from bisector.judge.attribution import needs_second_schedule
    from tests.unit.test_owners import heap_leak

    # Hooks registered per export: torch's files allocate them for the model, so no Python site of
    # the model's explains the +32.5 KB/export (under twice the 16 KB target). In eager or inference
    # such growth would be measured again; an export keeps its leak.
    groups = {"model": 0.0, "libraries": 0.0, "toolchain": 30000.0}
    owners = {"repeat": {"calls": 1, "groups": groups, "python_malloc": 30000.0, "sites": {}}}
    hooks = replace(heap_leak(32500.0), owners=owners)
    assert needs_second_schedule(hooks, 16384.0, "eager")
    assert not needs_second_schedule(hooks, 16384.0, "export")
