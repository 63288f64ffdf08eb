"""The lab: measure one model, in one stage, with given options, and judge it. What find and repair share.

A Lab owns the probe pool (or shares one), the runner with its caches, the run directory and the
recorded inputs, and the schedules. It answers three questions:

- ``stage(stage)``: the whole model against the control over the stage's schedule (a StageResult);
- ``regions(stage, regions, root)``: a set of regions run one after another on their recorded inputs,
  judged against the stage's control scaled to their number (a search Outcome);
- ``outputs_against(other, stage, ...)``: do this model's outputs match another configuration's?

``derive(model, overrides)`` gives a Lab for a changed model or changed options on the same pool,
executor and run directory: a fix candidate is measured that way.

The retry policy (rerun an unsure verdict with twice the iterations), the phases counted per stage,
the schedule builder and the owner tracing live here, once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bisector.common import marks
from bisector.common.errors import UserError
from bisector.common.units import format_bytes, per
from bisector.judge.attribution import NATIVE_TWIN_ENV, attribute, attribute_shapes, needs_native_twin, needs_owners
from bisector.judge.search import Outcome
from bisector.judge.signals import HEAP
from bisector.judge.verdict import CLEAN, INCONCLUSIVE, LEAK, Verdict, judge
from bisector.lab.results import CRASHED, FAILED, MeasureOptions, StageResult, outcome_of
from bisector.lab.runner import Events, Runner
from bisector.lab.timings import Stopwatch
from bisector.model.capture import capture_schedule, distinct_dims, missing, occurrences
from bisector.model.curve import MemoryCurve, Sample
from bisector.model.kinds import Kind
from bisector.model.schedule import Schedule, ScheduleProfile, Step, build_schedule, warmed
from bisector.model.spec import InputPlan, ModelSpec, library_imports
from bisector.model.tree import Tree
from bisector.probe.pool import ProbePool
from bisector.probe.types import (
    EquivalenceRequest,
    ProbeCrashed,
    ProbeFailed,
    ProbeKind,
    ProbeOk,
    ProbeRequest,
    ProbeResult,
    ProbeTimedOut,
)
from bisector.store.caches import ControlCache, ResultCache, default_cache_dir
from bisector.store.clean import claim_capture, evict_captures, release_capture

RUN_DIR = ".bisector"
# Frames a traced probe records per allocation: one in export, where torch's exporter allocates
# from deep stacks and each frame slows every allocation; enough elsewhere to look past the
# standard library to the caller's file.
OWNER_FRAMES = {"export": 1, "eager": 8, "inference": 8}


class Interrupted(Exception):
    """The run was stopped (Ctrl-C); what finished is kept in the run directory."""


# -- the run directory -----------------------------------------------------------------------------


def run_key(model: ModelSpec, plan: InputPlan, options: MeasureOptions) -> str:
    """One run directory per model, inputs and measuring options; the model's code and weights
    are checked separately (a changed model reuses nothing, see source_hash)."""
    data = {
        "model": model.to_json(),
        "plan": plan.to_json(),
        "seed": options.seed,
        "probe": options.probe.to_json(),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def source_hash(model: ModelSpec) -> str:
    """The model file and the Python files beside it: what the recorded inputs depend on."""
    h = hashlib.sha256()
    folder = Path(model.path).parent
    for f in sorted(folder.glob("*.py")):
        try:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        except OSError:
            pass
    return h.hexdigest()[:16]


def capture_key(model: ModelSpec, plan: InputPlan, options: MeasureOptions) -> str:
    data = {"model": model.to_json(), "plan": plan.to_json(), "seed": options.seed, "device": options.probe.device}
    key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    return f"{Path(model.path).stem}-{model.name}-{key}-{source_hash(model)}"


def prepare_run_dir(base: str | Path | None, model: ModelSpec, plan: InputPlan, options: MeasureOptions) -> Path:
    root = Path(base) if base else Path.cwd() / RUN_DIR
    marks.mark(root, marks.RUN_DIR)  # with its .gitignore; what clean may remove later
    run = root / "runs" / f"{Path(model.path).stem}-{model.name}-{run_key(model, plan, options)}"
    run.mkdir(parents=True, exist_ok=True)
    return run


def probe_limits(options: MeasureOptions) -> dict[str, Any]:
    """The per-probe limits of a run, as ProbePool.run takes them."""
    return {"timeout_s": options.timeout_s, "mem_cap": options.mem_cap, "fresh": options.fresh}


# -- judging ------------------------------------------------------------------------------------------


def count_phases(stage: str) -> tuple[str, ...]:
    """Phases whose object counts are judged: exports build a new graph per call, so only the
    repeated shapes say anything about counts there."""
    return ("repeat",) if stage == "export" else ("repeat", "novel", "within")


def scale_control(curve: MemoryCurve, k: int) -> MemoryCurve:
    """The control as if run k times per step: each metric's change from its first reading times k."""
    if k == 1 or not curve.samples:
        return curve
    first = curve.samples[0].values
    samples = tuple(
        Sample(s.phase, s.dims, {m: first[m] + k * (v - first[m]) if m in first else v for m, v in s.values.items()})
        for s in curve.samples
    )
    return MemoryCurve(samples=samples, type_growth=curve.type_growth, meta=curve.meta)


def scaled_owners(owners: Mapping[str, Any] | None, k: int) -> Mapping[str, Any] | None:
    """A traced control's per-call figures as if run k times per step, like scale_control."""
    if not owners or k == 1 or "repeat" not in owners:
        return owners
    rep = dict(owners["repeat"])
    rep["python_malloc"] = float(rep.get("python_malloc") or 0.0) * k
    return {**owners, "repeat": rep}


def owners_of(result: ProbeResult) -> dict[str, Any] | None:
    """What a traced probe found (None when it did not run to the end)."""
    return result.curve.meta.get("owners") if isinstance(result, ProbeOk) else None


def owners_profile(profile: ScheduleProfile, stage: str) -> ScheduleProfile:
    """The traced probe's schedule: the stage's warm-up, one traced pass of its own warm-up, then
    the passes split by owner: one in export (a traced export is ~5x slower), two elsewhere."""
    return replace(profile, repeat_passes=2 if stage == "export" else 3, novel=0, within=0)


def build_schedule_like(schedule: Schedule, profile: ScheduleProfile) -> Schedule:
    """A schedule over the same shapes as another, with another profile (same seed, same ranges)."""
    repeat = [dict(s.dims) for s in schedule.steps if s.phase == "repeat"]
    warm = [dict(s.dims) for s in schedule.steps if s.phase == "warmup"]
    shapes = list({tuple(sorted(d.items())): d for d in repeat}.values())
    steps = [Step("warmup", d) for d in warm]
    for _ in range(profile.repeat_passes):
        steps += [Step("repeat", d) for d in shapes]
    return Schedule(steps=tuple(steps), seed=schedule.seed, profile=profile)


def traced(request: ProbeRequest, stage: str) -> ProbeRequest:
    """The traced twin of a model probe (owners.py): same model, regions and inputs."""
    schedule = build_schedule_like(request.schedule, owners_profile(request.schedule.profile, stage))
    options = replace(request.options, owners=OWNER_FRAMES.get(stage, 8))
    return request.with_(options=options, schedule=schedule, label=f"{request.label} owners")


def retention_schedule(schedule: Schedule) -> Schedule:
    """A retention probe's schedule: the stage's warm-up, three passes over the repeated shapes
    (the first one the walker's own warm-up), then the novel shapes; no within phase."""
    steps = [s for s in schedule.steps if s.phase == "warmup"]
    shapes = list({s.key(): s for s in schedule.steps if s.phase == "repeat"}.values())
    for _ in range(3):
        steps += [Step("repeat", dict(s.dims)) for s in shapes]
    steps += [s for s in schedule.steps if s.phase == "novel"]
    return Schedule(steps=tuple(steps), seed=schedule.seed, profile=schedule.profile)


def floor_short(verdict: Verdict | None, options: MeasureOptions, stage: str) -> str | None:
    """Why a clean verdict is not yet good enough: its heap floor is above the stage's target."""
    if verdict is None or verdict.kind != CLEAN or verdict.growth_metric != HEAP:
        return None
    target = options.floor_targets.get(stage)
    floor = verdict.floor_bytes_per_call
    if target is None or floor is None or floor <= target:
        return None
    return f"detection floor {format_bytes(floor)}/call is above the target {format_bytes(target)}"


# The most passes a floor chase asks for in one attempt, as a multiple of the profile's: past it the
# schedule's own length (and the probe's timeout) matter more than the floor.
MAX_SCALE = 256
# A floor that a doubling of the passes lowered by less than this share is held up by the noise,
# which more passes raise with them: the chase stops there.
MIN_GAIN = 0.1


PER_CALL = {"export": "export", "inference": "run"}


def scale_for(floor: float, target: float, scale: int) -> int:
    """The passes (as a scale of the profile's) that bring this floor to the target: the floor
    falls as 1/sqrt(passes) while the spread holds (the standard error of the median)."""
    need = scale * (floor / target) ** 2
    return min(MAX_SCALE, max(scale + 1, math.ceil(need * 1.1)))  # 10%: the spread wanders


def budget_note(
    verdict: Verdict, target: float, scale: int, took_s: float, per: str = "call", noise_held: bool = False
) -> str:
    """What a chase that stopped before the target left: the floor reached, how long the target
    would take (or that more passes did not lower it), and the model's own per-call noise."""
    floor = verdict.floor_bytes_per_call or 0.0
    if noise_held:
        note = f"floor reached {format_bytes(floor)}/{per}; more passes did not lower it (the noise grew with them)"
    else:
        need = scale * (floor / target) ** 2 if target else float("inf")
        eta = took_s / scale * need
        note = (
            f"floor reached {format_bytes(floor)}/{per} in the stage budget; the target {format_bytes(target)} "
            f"would take ~{need:.0f}x the passes (~{eta / 60:.0f} min)"
        )
    own = verdict.model_noise_bytes_per_call
    if own is not None:
        note += f"; this model's own per-{per} noise under the toolchain is ±{format_bytes(own)}"
    return note


@dataclass(frozen=True)
class _Attempt:
    """One try of a retry loop: its result, and whether it ends the loop whatever the verdict."""

    value: Any
    verdict: Verdict | None
    final: bool = False


class Lab:
    """Measures one model (in any stage, whole or by regions) with one set of options."""

    def __init__(
        self,
        model: ModelSpec,
        plan: InputPlan,
        options: MeasureOptions,
        events: Events | None = None,
        run_dir: str | Path | None = None,
        *,
        keep: bool = True,
        pool: ProbePool | None = None,
        executor: ThreadPoolExecutor | None = None,
        runner: Any = None,
        timings: Stopwatch | None = None,
    ) -> None:
        """keep: results and recorded inputs go in the run directory (find and fix); measure keeps
        nothing there. runner: a stand-in for the probe runner (tests). timings: where phase spans
        go (a derived lab shares its parent's, so one model's spans are in one place)."""
        self.model = model
        self.timings = timings if timings is not None else Stopwatch()
        self.plan = plan
        self.options = options
        self.events = events or Events()
        self.jobs = options.jobs or (os.cpu_count() or 1)
        self.run: Path | None = prepare_run_dir(run_dir, model, plan, options) if keep else None
        # Recorded inputs depend on the model, its inputs and the seed, not on how it is exported or
        # run: every fix candidate that changes only options shares them.
        self.capture_dir: Path | None = (
            self.run.parent.parent / "captures" / capture_key(model, plan, options) if self.run else None
        )
        self._own_pool = pool is None and runner is None
        self.pool: Any = pool
        if runner is None:
            if self.pool is None:
                self.pool = ProbePool(
                    fresh=options.fresh,
                    timeout_s=options.timeout_s,
                    mem_cap=options.mem_cap,
                    preload=library_imports(model),
                )
            cache = ControlCache(
                None
                if options.cache_dir == ""
                else Path(options.cache_dir)
                if options.cache_dir
                else default_cache_dir()
            )
            runner = Runner(self.pool, self.jobs, cache, self.events, executor=executor, limits=probe_limits(options))
            if self.run is not None:
                runner.keep_failed_in = self.run / "failed-probes"
                if options.cache_dir != "":
                    # Keyed by the model's source: a changed model reuses nothing.
                    runner.results = ResultCache(self.run / "results", salt=source_hash(model))
        self.runner = runner
        self.interrupted = threading.Event()
        self._capture_lock = threading.Lock()
        self._derived: dict[str, Lab] = {}
        self._derive_lock = threading.Lock()
        self.tree: Tree | None = None
        self.unsaved: dict[str, str] = {}

    # -- lifetime ---------------------------------------------------------------------------------------

    @property
    def probes(self) -> int:
        """Probes run by this lab and every lab derived from it."""
        return self.runner.probes + sum(d.probes for d in list(self._derived.values()))

    @property
    def reused(self) -> int:
        return self.runner.reused

    def stop(self) -> None:
        """Ctrl-C: ask no new questions and kill the running probes; what finished is kept."""
        self.interrupted.set()
        if self.pool is not None:
            self.pool.close()

    def release_captures(self) -> bool:
        """The run is over and complete: its recorded inputs go (a run stopped half way keeps
        them to resume). Kept while another live process claims them. True when removed."""
        with self._capture_lock:
            return release_capture(self.capture_dir)

    def close(self) -> None:
        for d in list(self._derived.values()):
            d.close()
        if self._own_pool and self.pool is not None:
            self.pool.close()  # first: a probe still running for a failed stage is killed, not awaited
        if hasattr(self.runner, "close"):
            self.runner.close()

    def derive(
        self, model: ModelSpec | None = None, overrides: Mapping[str, Any] | None = None, warm_calls: int = 0
    ) -> Lab:
        """A Lab for the model as a fix candidate leaves it (edited source, probe overrides), on the
        same pool, executor and run directory. One per distinct configuration. warm_calls: calls of
        the repeated shapes the warm-up makes at least (schedule.warmed: a bounded fix fills first)."""
        model = model or self.model
        options = replace(self.options, probe=self.options.probe.with_overrides(overrides or {}))
        if warm_calls > 0:
            options = replace(options, profiles=warmed(options.profiles, self.plan.dims, warm_calls, options.seed))
        key = hashlib.sha256(repr((model.to_json(), options.probe.to_json(), warm_calls)).encode()).hexdigest()
        with self._derive_lock:
            lab = self._derived.get(key)
            if lab is None:
                lab = Lab(
                    model,
                    self.plan,
                    options,
                    self.events,
                    run_dir=self._run_root(),
                    keep=self.run is not None,
                    pool=self.pool,
                    executor=getattr(self.runner, "executor", None),
                    timings=self.timings,
                )
                # The regions' inputs are recorded once per run, not once per candidate: a fix
                # edits what a region does with its inputs, not what its callers pass it (a
                # candidate's copy of the source would otherwise record its own, GBs for a CNN).
                lab.capture_dir, lab._capture_lock = self.capture_dir, self._capture_lock
                self._derived[key] = lab
            return lab

    def _run_root(self) -> Path | None:
        return self.run.parent.parent if self.run is not None else None

    # -- schedules and recorded inputs ---------------------------------------------------------------

    def schedule(self, stage: str, scale: int = 1, per_call_only: bool = False, seed: int | None = None) -> Schedule:
        profile = self.options.profiles[stage]
        if per_call_only:
            # Searching regions for a per-call leak whose stage is already known to leak: the
            # repeated shapes alone tell, and with exports at ~1 s each, four deltas are enough.
            passes = min(profile.repeat_passes, max(2, -(-4 // profile.shapes)))
            profile = replace(profile, novel=0, within=0, repeat_passes=passes)
        if scale > 1:
            profile = profile.scaled(scale)
        return build_schedule(self.plan.dims, profile, self.options.seed if seed is None else seed)

    def ensure_captured(self, schedules: list[Schedule]) -> None:
        """Record the regions' inputs for every shape of these schedules that has none yet, and the
        module tree (an empty list of schedules records the tree alone)."""
        if self.capture_dir is None:
            raise UserError("this lab keeps no run directory, so it cannot record the regions' inputs")
        with self._capture_lock:
            claim_capture(self.capture_dir)  # in use until release_captures: no other run evicts it
            tree_file = self.capture_dir / "tree.json"
            todo = missing(self.capture_dir, distinct_dims(schedules))
            known = json.loads(tree_file.read_text()) if tree_file.exists() else None
            if known is not None and self.tree is None:
                self.tree = Tree.from_json(known["tree"])
                self.unsaved = dict(known.get("unsaved", {}))
            if not todo and known is not None:
                return
            request = ProbeRequest(
                self.model,
                self.plan,
                None,
                capture_schedule(todo, self.options.seed, occurrences(schedules)),
                self.options.probe,
                capture=str(self.capture_dir),
                label="record inputs" if todo else "module tree",
                kind=ProbeKind.CAPTURE,
            )
            result = self.runner.submit(request).result()
            kept = f" (probe folder kept: {result.probe_dir})" if getattr(result, "probe_dir", "") else ""
            if isinstance(result, ProbeFailed):
                raise UserError(
                    f"recording the regions' inputs failed: {result.message}{kept}", detail=result.traceback
                )
            if not isinstance(result, ProbeOk):
                raise UserError(f"recording the regions' inputs {result.describe()}{kept}", detail=result.tail)
            self.unsaved.update(result.data.get("unsaved", {}))
            # A tree from a run with forwards knows which modules were called; keep that one.
            if known is None or (todo and not known.get("called_known")):
                self.tree = Tree.from_json(result.data["tree"])
                self.capture_dir.mkdir(parents=True, exist_ok=True)
                tmp = tree_file.with_suffix(f".{os.getpid()}.tmp")
                tree = {"tree": result.data["tree"], "unsaved": self.unsaved, "called_known": bool(todo)}
                tmp.write_text(json.dumps(tree))
                os.replace(tmp, tree_file)
            evict_captures(self.capture_dir, self.model.path)  # past the cap, the oldest other captures go

    def _inputs_for(self, request: ProbeRequest, extra_key: str = "") -> None:
        """Record the inputs a region probe replays, unless its result is kept from an earlier run
        (then the probe does not run, and a released capture need not be recorded again)."""
        results = getattr(self.runner, "results", None)
        if results is not None and results.get(request, extra_key) is not None:
            return
        self.ensure_captured([request.schedule])

    # -- the retry policy ----------------------------------------------------------------------------------

    def _retrying(
        self,
        attempt: Callable[[int, int], _Attempt],
        settled: Callable[[_Attempt], bool],
        budget_s: float | None = None,
        chase: Callable[[_Attempt, int], int | None] | None = None,
    ) -> _Attempt:
        """Try at scale 1, 2, 4, ... (twice the iterations each time), up to ``retries`` reruns, until
        an attempt is final or settled, or the time budget is spent.

        chase: for an attempt that is settled but for its floor, the scale the target needs (0: no
        more passes would lower it), or None (not a floor to chase: a rerun as above). A chase is
        bound by the budget, not by ``retries``: its scale is cut to what the time left allows,
        judged by the last attempt's time per scale."""
        started = time.perf_counter()
        result: _Attempt | None = None
        scale, reruns = 1, 0
        for n in range(self.options.retries + 16):  # 16: a chase's attempts, bounded by the budget too
            begun = time.perf_counter()
            result = attempt(n, scale)
            if result.final or settled(result):
                break
            took = time.perf_counter() - begun
            wanted = chase(result, scale) if chase is not None else None
            if wanted is None:
                reruns += 1
                if reruns > self.options.retries or (budget_s is not None and time.perf_counter() - started > budget_s):
                    break
                scale *= 2
                continue
            if budget_s is not None:
                left = budget_s - (time.perf_counter() - started)
                wanted = min(wanted, int(left / max(took / scale, 1e-9)))
            if wanted <= scale:
                break
            scale = wanted
        assert result is not None
        return result

    def _attribute(
        self,
        verdict: Verdict,
        request: ProbeRequest,
        control: ProbeRequest,
        stage: str,
        k: int = 1,
        extra_key: str = "",
        twin: Future | None = None,
        twin_control: Future | None = None,
        objects: bool = True,
    ) -> Verdict:
        """Heap growth alone: the model's own, or the toolchain's? Ask the traced twins (owners.py)."""
        with self.timings.phase("trace", request.label):
            twin = twin or self.runner.submit(traced(request, stage), extra_key=extra_key)
            twin_control = twin_control or self.runner.submit(traced(control, stage))
            owners, control_owners = owners_of(twin.result()), owners_of(twin_control.result())
        return attribute(verdict, owners, stage, scaled_owners(control_owners, k), objects=objects)

    def _native_twin(self, verdict: Verdict, request: ProbeRequest, control: MemoryCurve | None, stage: str) -> Verdict:
        """Eager growth per new shape in bytes alone: measured again with torch's oneDNN primitive
        cache off (the control has no convolution: its curve serves both). What goes away is the
        toolchain's (attribution.attribute_shapes)."""
        env = {**request.options.env, **NATIVE_TWIN_ENV}
        twin = request.with_(options=replace(request.options, env=env), label=f"{request.label} (oneDNN cache off)")
        got = self.runner.submit(twin).result()
        if not isinstance(got, ProbeOk):
            return verdict
        o = self.options
        target = o.floor_targets.get(stage, 0.0)
        return attribute_shapes(
            verdict,
            judge(got.curve, control, o.bands, o.metric, count_phases(stage), step=per(stage), floor_target=target),
        )

    # -- the questions ------------------------------------------------------------------------------------------

    def stage(self, stage: str, seed: int | None = None) -> StageResult:
        """Model and control over one stage's schedule; rerun with more iterations while unsure or
        while a clean verdict's floor is above the stage's target (within the time budget); a
        per-call leak that only bytes show is traced to its owners (see owners.py)."""
        options = self.options if seed is None else replace(self.options, seed=seed)
        probes = 0
        timing: dict[str, float] = {}  # the last attempt's scale and wall time

        def attempt(n: int, scale: int) -> _Attempt:
            began = time.perf_counter()
            a = _attempt(n, scale)
            timing.update(scale=scale, took=time.perf_counter() - began)
            return a

        def _attempt(n: int, scale: int) -> _Attempt:
            nonlocal probes
            schedule = self.schedule(stage, scale, seed=options.seed)
            suffix = f" x{scale}" if scale > 1 else ""

            def request(control: bool) -> ProbeRequest:
                label = f"{stage}{' control' if control else ''}{suffix}"
                return ProbeRequest(
                    model=self.model,
                    plan=self.plan,
                    stage=stage,
                    schedule=schedule,
                    options=options.probe,
                    control=control,
                    label=label,
                )

            fut_model = self.runner.submit(request(False))
            fut_control = self.runner.submit(request(True))
            # Exports are the costly probes, and a dynamo export's heap grows with the graph in
            # torch's own files: its traced probes start with the others rather than after them.
            speculate = stage == "export" and n == 0 and options.probe.exporter != "torchscript"
            twins = [self.runner.submit(traced(request(c), stage)) if speculate else None for c in (False, True)]
            got = fut_model.result()
            if not isinstance(got, ProbeOk):
                # The model cannot run this stage: its control run would measure nothing of use.
                for fut in (fut_control, *twins):
                    if fut is not None:
                        fut.cancel()
                kind = FAILED if isinstance(got, ProbeFailed) else CRASHED
                return _Attempt(
                    StageResult(stage, kind, failure=got, probes=probes + 1, attempts=n + 1), None, final=True
                )
            ctrl = fut_control.result()
            probes += 2
            control_curve = ctrl.curve if isinstance(ctrl, ProbeOk) else None
            verdict = judge(
                got.curve,
                control_curve,
                options.bands,
                options.metric,
                count_phases=count_phases(stage),
                step=per(stage),
                floor_target=options.floor_targets.get(stage, 0.0),
            )
            # Objects that grow in the exporter or the runtime may be theirs (probe/objects.py);
            # in eager, the model's forward made them.
            if needs_owners(verdict, objects=stage != "eager"):
                verdict = self._attribute(
                    verdict, request(False), request(True), stage, twin=twins[0], twin_control=twins[1]
                )
                probes += 2
            else:
                for fut in twins:
                    if fut is not None:
                        fut.cancel()
            # The device the probe ran on ("auto" resolves in the child).
            if needs_native_twin(verdict, stage, str(got.curve.meta.get("device") or options.probe.device)):
                verdict = self._native_twin(verdict, request(False), control_curve, stage)
                probes += 1
            result = StageResult(
                stage,
                verdict.kind,
                verdict=verdict,
                curve=got.curve,
                control=control_curve,
                control_failure=None if isinstance(ctrl, ProbeOk) else ctrl,
                probes=probes,
                attempts=n + 1,
            )
            return _Attempt(result, verdict)

        def settled(a: _Attempt) -> bool:
            return (
                a.verdict is not None and a.verdict.kind != INCONCLUSIVE and not floor_short(a.verdict, options, stage)
            )

        floors: dict[int, float] = {}  # scale: the floor it reached, to see the chase still gains

        def chase(a: _Attempt, scale: int) -> int | None:
            v = a.verdict
            if not floor_short(v, options, stage) or v is None or v.floor_bytes_per_call is None:
                return None
            floors[scale] = v.floor_bytes_per_call
            before = [f for s, f in floors.items() if s < scale]
            if before and v.floor_bytes_per_call > (1 - MIN_GAIN) * min(before):
                timing["noise_held"] = 1.0
                return 0  # the noise grew with the passes: more of them would not lower the floor
            return scale_for(v.floor_bytes_per_call, options.floor_targets[stage], scale)

        result: StageResult = self._retrying(attempt, settled, options.budget_s, chase).value
        short = floor_short(result.verdict, options, stage) if result.verdict is not None else None
        if short and result.verdict is not None:
            # The budget ran out (or the noise held the floor up) before the target: say so, with the
            # floor reached, how long the target would take and the model's own noise.
            v = result.verdict
            scale, took = timing.get("scale", 1), timing.get("took", 0.0)
            step = per(stage)
            held = bool(timing.get("noise_held"))
            note = budget_note(v, options.floor_targets[stage], int(scale), took, step, held)
            v = replace(v, kind=INCONCLUSIVE, reasons=v.reasons + (f"{short}: {note}",))
            result = replace(result, kind=INCONCLUSIVE, verdict=v)
        return result

    def regions(self, stage: str, regions: tuple[str, ...], root: StageResult) -> Outcome:
        """These regions run one after another on their recorded inputs, judged against the stage's
        control scaled to their number; ``root`` is the whole model's result in this stage."""
        if self.interrupted.is_set():
            raise Interrupted()
        per_call_only = stage == "export" and root.kind == LEAK  # exports are the costly probes
        # A first run records the tree and every shape's inputs in one probe; a re-run knows the
        # tree (kept when the inputs go, see clean.release_capture) and records inputs only for a
        # probe whose result is not kept already (_inputs_for): a finished search re-run runs none.
        first = self.capture_dir is not None and not (self.capture_dir / "tree.json").exists()
        self.ensure_captured([self.schedule(stage, per_call_only=per_call_only)] if first else [])
        assert self.tree is not None
        absent = [r for r in regions if r not in self.tree.regions]
        if absent:
            return Outcome(Kind.FAILED, message=f"the model has no {absent[0]!r}")
        blocked = [r for r in regions if r in self.unsaved]
        if blocked:
            return Outcome(
                Kind.FAILED, message=f"inputs of {blocked[0]!r} could not be recorded: {self.unsaved[blocked[0]]}"
            )
        k = len(regions) if stage == "eager" else 1  # export/inference run a group as one module
        weights = "+".join(self.tree.regions[r].subtree_hash for r in regions)

        def attempt(n: int, scale: int) -> _Attempt:
            schedule = self.schedule(stage, scale, per_call_only)
            label = f"{stage} {', '.join(r or '<root>' for r in regions)}" + (f" x{scale}" if scale > 1 else "")
            request = ProbeRequest(
                self.model,
                self.plan,
                stage,
                schedule,
                self.options.probe,
                regions=regions,
                capture=str(self.capture_dir),
                label=label,
            )
            self._inputs_for(request, weights)
            result = self.runner.submit(request, extra_key=weights).result()
            if self.interrupted.is_set():
                raise Interrupted()
            if isinstance(result, ProbeFailed):
                return _Attempt(Outcome(Kind.FAILED, message=result.message), None, final=True)
            if isinstance(result, (ProbeCrashed, ProbeTimedOut)):
                return _Attempt(Outcome(Kind.CRASHED, message=result.describe()), None, final=True)
            assert isinstance(result, ProbeOk)
            control = self._control(stage, scale, root)
            scaled = scale_control(control, k) if control is not None else None
            verdict = judge(
                result.curve,
                scaled,
                self.options.bands,
                self.options.metric,
                count_phases=count_phases(stage),
                step=per(stage),
                floor_target=self.options.floor_targets.get(stage, 0.0),
            )
            if needs_owners(verdict):
                # The control run as often per step as the regions are (scale_control).
                twin_control = request.with_(control=True, regions=("",), capture=None, label=f"{stage} control")
                self._inputs_for(traced(request, stage), weights)
                verdict = self._attribute(verdict, request, twin_control, stage, k, extra_key=weights, objects=False)
            return _Attempt(outcome_of(verdict, result.curve, scaled), verdict)

        def settled(a: _Attempt) -> bool:
            return a.verdict is not None and a.verdict.kind != INCONCLUSIVE

        return self._retrying(attempt, settled).value

    def _control(self, stage: str, scale: int, root: StageResult) -> MemoryCurve | None:
        if scale == 1 and root.control is not None and root.attempts == 1:
            return root.control
        request = ProbeRequest(
            self.model,
            self.plan,
            stage,
            self.schedule(stage, scale),
            self.options.probe,
            control=True,
            label=f"{stage} control x{scale}",
        )
        result = self.runner.submit(request).result()
        return result.curve if isinstance(result, ProbeOk) else None

    def retention(self, stage: str, region: str) -> Future:
        """A retention probe of one region on its recorded inputs (probe/retention.py): what holds
        the objects its calls leave behind. A future of the probe's result."""
        schedule = retention_schedule(self.schedule(stage))
        request = ProbeRequest(
            self.model,
            self.plan,
            stage,
            schedule,
            replace(self.options.probe, retention=True),
            regions=(region,),
            capture=str(self.capture_dir),
            label=f"{stage} {region or '<root>'} retention",
        )
        self._inputs_for(request)
        return self.runner.submit(request)

    def outputs_against(
        self, other: Lab, stage: str, mode: str, rtol: float, atol: float, label: str = "outputs"
    ) -> dict[str, Any]:
        """This model's outputs against another configuration's (a fix candidate), over this stage's
        shapes: {"equivalent", "max_abs_diff", "max_rel_diff", ...} or {"failed": why}."""
        request = ProbeRequest(
            self.model,
            self.plan,
            None,
            self.schedule(stage),
            self.options.probe,
            label=label,
            kind=ProbeKind.EQUIVALENCE,
            equivalence=EquivalenceRequest(other.model, other.options.probe, mode, rtol, atol),
        )
        result = self.runner.submit(request).result()
        if isinstance(result, ProbeOk):
            return dict(result.data)
        if isinstance(result, ProbeFailed):
            return {"failed": result.message}
        return {"failed": result.describe()}
