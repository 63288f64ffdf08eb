"""Measure each stage of one model against a control, with retries for inconclusive probes.

For every stage asked for: build the stage's schedule, run the model and the trivial control
module over it in child processes (in parallel, up to ``jobs``), judge the model's curve against
the control's, and when the verdict is inconclusive run both again with twice the iterations, up
to ``retries`` times. Control runs are cached on disk (they depend only on the inputs, the
schedule, the options and the installed versions), so a second run, or another model with the
same inputs, does not pay for them again.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from bisector.curve import MemoryCurve
from bisector.probe.pool import ProbePool
from bisector.probe.types import STAGES, ProbeFailed, ProbeOk, ProbeOptions, ProbeRequest, ProbeResult, result_from_json
from bisector.schedule import PROFILES, Schedule, ScheduleProfile, Step, build_schedule
from bisector.spec import InputPlan, ModelSpec, library_imports
from bisector.verdict import CLEAN, HEAP, INCONCLUSIVE, SEVERITY, Bands, Verdict, attribute, judge, needs_owners

FLOOR_TARGETS = {"eager": 4096.0, "inference": 4096.0, "export": 16384.0}
# Frames a traced probe records per allocation: one in export, where torch's exporter allocates
# from deep stacks and each frame slows every allocation; enough elsewhere to look past the
# standard library to the caller's file.
OWNER_FRAMES = {"export": 1, "eager": 8, "inference": 8}
CRASHED = "crashed"  # a stage whose model probe died, hung or hit the memory cap
FAILED = "failed"  # a stage whose model probe raised (the model cannot run or export)
STAGE_SEVERITY = {**SEVERITY, CRASHED: 1.5, FAILED: 1.5}


@dataclass(frozen=True)
class MeasureOptions:
    stages: tuple[str, ...] = STAGES
    probe: ProbeOptions = ProbeOptions()
    seed: int = 0
    bands: Bands = Bands()
    metric: str = "rss"
    retries: int = 2
    jobs: int | None = None
    fresh: bool = False
    timeout_s: float = 300.0
    mem_cap: int | None = None
    cache_dir: str | None = None  # None: the user cache folder; "" disables the control cache
    profiles: dict[str, ScheduleProfile] = field(default_factory=lambda: dict(PROFILES))
    # The detection floor a clean verdict must reach (bytes per call or export), else more repeat
    # calls are run, within budget_s per stage; past it the stage is inconclusive at the floor it
    # reached. Only the exact heap meter can reach these; RSS-only judging states its floor.
    floor_targets: dict[str, float] = field(default_factory=lambda: dict(FLOOR_TARGETS))
    budget_s: float = 240.0


@dataclass(frozen=True)
class StageResult:
    stage: str
    kind: str  # a verdict kind, or "failed" / "crashed"
    verdict: Verdict | None = None
    curve: MemoryCurve | None = None
    control: MemoryCurve | None = None
    failure: ProbeResult | None = None
    control_failure: ProbeResult | None = None
    probes: int = 0
    attempts: int = 1
    schedule: Schedule | None = None

    def to_json(self, samples: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"verdict": self.kind}
        if self.verdict is not None:
            out.update(self.verdict.to_json())
            out["verdict"] = self.kind
        else:
            for key in (
                "growth_bytes_per_call", "growth_bytes_per_new_shape", "baseline_bytes_per_call",
                "baseline_bytes_per_new_shape", "noise_bytes",
            ):
                out[key] = None
        if self.failure is not None:
            out["error"] = self.failure.to_json()
        if self.control_failure is not None:
            out["control_error"] = self.control_failure.to_json()
        out["attempts"] = self.attempts
        out["probes"] = self.probes
        if self.curve is not None:
            out["samples"] = [s.to_json() for s in self.curve.samples] if samples else []
            out["type_growth"] = {k: dict(v) for k, v in self.curve.type_growth.items()}
            out["meta"] = dict(self.curve.meta)
        else:
            out["samples"] = []
        if self.control is not None:
            out["control_samples"] = [s.to_json() for s in self.control.samples] if samples else []
        return out


@dataclass(frozen=True)
class MeasureReport:
    model: ModelSpec
    plan: InputPlan
    stages: dict[str, StageResult]
    probes: int
    wall_s: float
    options: MeasureOptions

    @property
    def verdict(self) -> str:
        kinds = [r.kind for r in self.stages.values()]
        return max(kinds, key=lambda k: STAGE_SEVERITY.get(k, 0), default=CLEAN)

    def to_json(self, samples: bool = True) -> dict[str, Any]:
        return {
            "spec": self.model.label,
            "model": self.model.to_json(),
            "inputs": self.plan.describe(),
            "dims": {k: list(v) for k, v in self.plan.dims.items()},
            "verdict": self.verdict,
            "stages": {name: r.to_json(samples) for name, r in self.stages.items()},
            "bands": self.options.bands.to_json(),
            "probes": self.probes,
            "wall_s": round(self.wall_s, 2),
        }


# ---------------------------------------------------------------------------------------------


class Events:
    """Progress callbacks; the CLI renders them, the library stays silent."""

    def probe_started(self, label: str) -> None: ...

    def probe_finished(self, label: str, result: ProbeResult, cached: bool = False) -> None: ...


def default_cache_dir() -> Path:
    base = os.environ.get("BISECTOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bisector"
    )
    return Path(base)


def code_version() -> str:
    """A hash of bisector's own code (and its fixers): a cached result is only reused by the
    code that made it."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        import hashlib

        from bisector.fixers import FOLDER as fixers_folder

        h = hashlib.sha256()
        # Installed, the fixers sit inside bisector's folder; in a checkout, beside it: a set.
        root = Path(__file__).resolve().parent
        for f in sorted({f for folder in (root, fixers_folder.resolve()) for f in folder.rglob("*.py")}):
            try:
                h.update(f.read_bytes())
            except OSError:
                pass
        _CODE_VERSION = h.hexdigest()[:12]
    return _CODE_VERSION


_CODE_VERSION: str | None = None


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0], "executable": sys.executable, "bisector": code_version()}
    for dist in ("torch", "onnxruntime-gpu", "onnxruntime", "onnx", "onnxscript"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


class ControlCache:
    """Control curves on disk, keyed by everything that decides them."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._versions = _versions() if folder else {}

    def _path(self, request: ProbeRequest) -> Path | None:
        if self.folder is None:
            return None
        data = request.to_json()
        data.pop("label", None)
        if not request.plan.use_hook:
            data.pop("model", None)  # the control never runs the model's code
        data["versions"] = self._versions
        import hashlib

        key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]
        return self.folder / "controls" / f"{request.stage}-{key}.json"

    def get(self, request: ProbeRequest) -> ProbeResult | None:
        path = self._path(request)
        if path is None or not path.exists():
            return None
        try:
            return result_from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError):
            return None

    def put(self, request: ProbeRequest, result: ProbeResult) -> None:
        path = self._path(request)
        if path is None or not isinstance(result, ProbeOk):
            return
        _write_atomic(path, result.to_json())


def _write_atomic(path: Path, data: Any) -> None:
    """JSON to path via a temp file and a rename: a reader never sees half a file, and concurrent
    writers of one key just race to the same content. A cache that cannot write is no error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        pass


class ResultCache:
    """Model probe results of one run directory, keyed by the request and a hash of the model's
    code and weights (salt): a re-run, an interrupted run resumed, or `fix` after `find` reuse
    every probe that finished."""

    def __init__(self, folder: Path, salt: str) -> None:
        self.folder = folder
        self.salt = salt

    def _path(self, request: ProbeRequest, extra: str = "") -> Path:
        import hashlib

        key = hashlib.sha256(f"{request.key()}:{self.salt}:{extra}:{code_version()}".encode()).hexdigest()[:24]
        return self.folder / f"{request.stage}-{key}.json"

    def get(self, request: ProbeRequest, extra: str = "") -> ProbeResult | None:
        path = self._path(request, extra)
        if not path.exists():
            return None
        try:
            return result_from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError):
            return None

    def put(self, request: ProbeRequest, result: ProbeResult, extra: str = "") -> None:
        # Crashes and timeouts are not kept: they may be the machine's fault, worth a retry.
        if not isinstance(result, (ProbeOk, ProbeFailed)):
            return
        path = self._path(request, extra)
        _write_atomic(path, result.to_json())


class Runner:
    """Runs probe requests on a pool, at most ``jobs`` at once, caching control runs (and, with a
    ResultCache, the model's own runs)."""

    def __init__(
        self, pool: ProbePool, jobs: int, cache: ControlCache, events: Events, results: ResultCache | None = None,
        executor: ThreadPoolExecutor | None = None, limits: Mapping[str, Any] | None = None,
    ) -> None:
        self.pool = pool
        # This model's timeout, memory cap and fresh, sent with every probe: a shared pool's own
        # are another model's (or the pytest plugin's 600 s).
        self.limits = dict(limits or {})
        self.cache = cache
        self.results = results
        self.events = events
        self.reused = 0
        # Runners that share an executor share its limit on probes running at once.
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="bisector-probe")
        self.probes = 0
        self._lock = threading.Lock()
        # Where the folders of failed or crashed probes are kept (find's run directory); without
        # one they go with the pool's temporary folder, and errors do not point to them.
        self.keep_failed_in: Path | None = None

    def _keep(self, result: ProbeResult) -> ProbeResult:
        src = getattr(result, "probe_dir", "")
        if not src:
            return result
        from dataclasses import replace

        kept = ""
        if self.keep_failed_in is not None and Path(src).is_dir():
            import shutil

            target = self.keep_failed_in / f"{Path(src).name}-{os.getpid()}-{int(time.time() * 1000) % 10**9}"
            try:
                shutil.copytree(src, target)
                kept = str(target)
            except OSError:
                pass
        return replace(result, probe_dir=kept)

    def submit(self, request: ProbeRequest, extra_key: str = "") -> Future:
        """Run (or reuse) a probe. extra_key: more that decides the result, e.g. the code and
        weights hashes of the regions probed."""
        cached = self.cache.get(request) if request.control else (self.results.get(request, extra_key) if self.results else None)
        if cached is not None:
            fut: Future = Future()
            fut.set_result(cached)
            with self._lock:
                self.reused += 0 if request.control else 1
            self.events.probe_finished(request.label, cached, cached=True)
            return fut
        return self.executor.submit(self._run, request, extra_key)

    def _run(self, request: ProbeRequest, extra_key: str = "") -> ProbeResult:
        self.events.probe_started(request.label)
        result = self._keep(self.pool.run(request, **self.limits))
        with self._lock:
            self.probes += 1
        if request.control:
            self.cache.put(request, result)
        elif self.results is not None:
            self.results.put(request, result, extra_key)
        self.events.probe_finished(request.label, result)
        return result

    def close(self) -> None:
        if self._own_executor:
            self.executor.shutdown(wait=True, cancel_futures=True)


def measure_stage(
    runner: Runner,
    model: ModelSpec,
    plan: InputPlan,
    stage: str,
    options: MeasureOptions,
    make_request: Callable[[Schedule, bool, str], ProbeRequest] | None = None,
) -> StageResult:
    """Model and control over one stage's schedule; rerun with more iterations while unsure or
    while a clean verdict's floor is above the stage's target (within the time budget); a per-call
    leak that only bytes show is traced to its owners (see owners.py)."""
    base = options.profiles[stage]
    probes = 0
    result: StageResult | None = None
    started = time.perf_counter()
    for attempt in range(options.retries + 1):
        scale = 2**attempt
        schedule = build_schedule(plan.dims, base.scaled(scale) if scale > 1 else base, options.seed)
        suffix = f" x{scale}" if scale > 1 else ""

        def request(control: bool) -> ProbeRequest:
            label = f"{stage}{' control' if control else ''}{suffix}"
            if make_request is not None:
                return make_request(schedule, control, label)
            return ProbeRequest(model=model, plan=plan, stage=stage, schedule=schedule, options=options.probe, control=control, label=label)

        def traced_request() -> ProbeRequest:
            return traced(request(False), stage)

        fut_model = runner.submit(request(False))
        fut_control = runner.submit(request(True))
        # Exports are the costly probes, and a dynamo export's heap grows with the graph in torch's
        # own files: its traced probe starts with the others rather than after them.
        speculate = stage == "export" and attempt == 0 and options.probe.exporter != "torchscript"
        fut_traced = runner.submit(traced_request()) if speculate else None
        fut_traced_control = runner.submit(traced(request(True), stage)) if speculate else None
        got = fut_model.result()
        if not isinstance(got, ProbeOk):
            # The model cannot run this stage: its control run would measure nothing of use.
            fut_control.cancel()
            for fut in (fut_traced, fut_traced_control):
                if fut is not None:
                    fut.cancel()
            kind = FAILED if isinstance(got, ProbeFailed) else CRASHED
            return StageResult(stage, kind, failure=got, probes=probes + 1, attempts=attempt + 1, schedule=schedule)
        ctrl = fut_control.result()
        probes += 2
        control_curve = ctrl.curve if isinstance(ctrl, ProbeOk) else None
        control_failure = None if isinstance(ctrl, ProbeOk) else ctrl
        count_phases = ("repeat",) if stage == "export" else ("repeat", "novel", "within")
        verdict = judge(got.curve, control_curve, options.bands, options.metric, count_phases=count_phases)
        if needs_owners(verdict):
            fut_twin = fut_traced or runner.submit(traced_request())
            fut_twin_control = fut_traced_control or runner.submit(traced(request(True), stage))
            verdict = attribute(verdict, owners_of(fut_twin.result()), stage, owners_of(fut_twin_control.result()))
            probes += 2
        else:
            for fut in (fut_traced, fut_traced_control):
                if fut is not None:
                    fut.cancel()
        result = StageResult(
            stage, verdict.kind, verdict=verdict, curve=got.curve, control=control_curve,
            control_failure=control_failure, probes=probes, attempts=attempt + 1, schedule=schedule,
        )
        short = floor_short(verdict, options, stage)
        if verdict.kind != INCONCLUSIVE and not short:
            break
        if time.perf_counter() - started > options.budget_s:
            break
    assert result is not None
    short = floor_short(result.verdict, options, stage) if result.verdict is not None else None
    if short and result.verdict is not None:
        # The budget ran out before the floor reached the target: say so, with the floor reached.
        v = result.verdict
        v = replace(v, kind=INCONCLUSIVE, reasons=v.reasons + (short,))
        result = replace(result, kind=INCONCLUSIVE, verdict=v)
    return result


def owners_of(result: ProbeResult) -> dict[str, Any] | None:
    """What a traced probe found (None when it did not run to the end)."""
    return result.curve.meta.get("owners") if isinstance(result, ProbeOk) else None


def owners_profile(profile: ScheduleProfile, stage: str) -> ScheduleProfile:
    """The traced probe's schedule: the stage's warm-up, one traced pass of its own warm-up, then
    the passes split by owner: one in export (a traced export is ~5x slower), two elsewhere."""
    return replace(profile, repeat_passes=2 if stage == "export" else 3, novel=0, within=0)


def traced(request: ProbeRequest, stage: str) -> ProbeRequest:
    """The traced twin of a model probe (owners.py): same model, regions and inputs."""
    schedule = build_schedule_like(request.schedule, owners_profile(request.schedule.profile, stage))
    options = replace(request.options, owners=OWNER_FRAMES.get(stage, 8))
    return request.with_(options=options, schedule=schedule, label=f"{request.label} owners")


def build_schedule_like(schedule: Schedule, profile: ScheduleProfile) -> Schedule:
    """A schedule over the same shapes as another, with another profile (same seed, same ranges)."""
    ranges: dict[str, tuple[int, int]] = {}
    for step in schedule.steps:
        for k, v in step.dims.items():
            lo, hi = ranges.get(k, (v, v))
            ranges[k] = (min(lo, v), max(hi, v))
    repeat = [dict(s.dims) for s in schedule.steps if s.phase == "repeat"]
    warm = [dict(s.dims) for s in schedule.steps if s.phase == "warmup"]
    shapes = list({tuple(sorted(d.items())): d for d in repeat}.values())
    steps = [Step("warmup", d) for d in warm]
    for _ in range(profile.repeat_passes):
        steps += [Step("repeat", d) for d in shapes]
    return Schedule(steps=tuple(steps), seed=schedule.seed, profile=profile)


def floor_short(verdict: Verdict | None, options: MeasureOptions, stage: str) -> str | None:
    """Why a clean verdict is not yet good enough: its heap floor is above the stage's target."""
    if verdict is None or verdict.kind != CLEAN or verdict.growth_metric != HEAP:
        return None
    target = options.floor_targets.get(stage)
    floor = verdict.floor_bytes_per_call
    if target is None or floor is None or floor <= target:
        return None
    from bisector.units import format_bytes

    return f"detection floor {format_bytes(floor)}/call is above the target {format_bytes(target)} (more calls would lower it)"


def stage_order(stages: tuple[str, ...]) -> list[str]:
    """Exports are the slow probes: start them first so the cheap ones fill in around them."""
    rank = {"export": 0, "inference": 1, "eager": 2}
    return sorted(stages, key=lambda s: rank.get(s, 3))


def measure(
    model: ModelSpec,
    plan: InputPlan,
    options: MeasureOptions = MeasureOptions(),
    events: Events | None = None,
    pool: ProbePool | None = None,
) -> MeasureReport:
    started = time.perf_counter()
    events = events or Events()
    jobs = options.jobs or (os.cpu_count() or 1)
    own_pool = pool is None
    if pool is None:
        pool = ProbePool(fresh=options.fresh, timeout_s=options.timeout_s, mem_cap=options.mem_cap, preload=library_imports(model))
    cache = ControlCache(None if options.cache_dir == "" else Path(options.cache_dir) if options.cache_dir else default_cache_dir())
    runner = Runner(pool, jobs, cache, events, limits=probe_limits(options))
    results: dict[str, StageResult] = {}
    try:
        with ThreadPoolExecutor(max_workers=len(options.stages) or 1, thread_name_prefix="bisector-stage") as stages:
            futures = {s: stages.submit(measure_stage, runner, model, plan, s, options) for s in stage_order(options.stages)}
            try:
                for s in options.stages:
                    results[s] = futures[s].result()
            except KeyboardInterrupt:
                # Kill the probes now: leaving this block waits for the stage threads, which
                # would otherwise wait for every running probe's timeout (300 s by default).
                pool.terminate()
                raise
    finally:
        if own_pool:
            pool.close()  # first: kills any control still running for a stage that failed
        runner.close()
    ordered = {s: results[s] for s in STAGES if s in results}
    return MeasureReport(model=model, plan=plan, stages=ordered, probes=runner.probes, wall_s=time.perf_counter() - started, options=options)


def probe_limits(options: MeasureOptions) -> dict[str, Any]:
    """The per-probe limits of a run, as ProbePool.run takes them."""
    return {"timeout_s": options.timeout_s, "mem_cap": options.mem_cap, "fresh": options.fresh}


def with_probe(options: MeasureOptions, **changes: Any) -> MeasureOptions:
    return replace(options, probe=replace(options.probe, **changes))
