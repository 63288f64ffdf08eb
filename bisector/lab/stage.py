"""The lab: measure one model, in one stage, with given options, and judge it. What find and the fix engine share.

A Lab owns the probe pool (or shares one), the runner with its caches, the run directory and the
recorded inputs, and the schedules. It answers three questions:

- ``stage(stage)``: the whole model against the control over the stage's schedule (a StageResult);
- ``regions(stage, regions, root)``: a set of regions run one after another on their recorded inputs,
  judged against the stage's control scaled to their number (a search Outcome);
- ``outputs_against(other, stage, ...)``: do this model's outputs match another configuration's?

``derive(model, overrides)`` gives a Lab for a changed model or changed options on the same pool,
executor and run directory: a fix candidate is measured that way.

The run directory, the recorded inputs and the schedules live here; one stage's attempts in
stage_run.py, the retry policy (rerun an unsure verdict with twice the iterations, chase a floor)
in retry.py, and the traced twins' and retention probes' requests in twins.py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from bisector.common import marks
from bisector.common.errors import UserError
from bisector.judge.attribution import NATIVE_TWIN_ENV, attribute, attribute_shapes, needs_owners
from bisector.judge.search import Outcome
from bisector.judge.verdict import INCONCLUSIVE, LEAK, Verdict
from bisector.lab.exports import SharedExports
from bisector.lab.references import References
from bisector.lab.results import MeasureOptions, StageResult, outcome_of
from bisector.lab.retry import Attempt, retrying
from bisector.lab.runner import Events, Runner
from bisector.lab.stage_run import StageRun, judged
from bisector.lab.timings import Stopwatch
from bisector.lab.twins import owners_of, retention_schedule, scale_control, scaled_owners, traced
from bisector.model.capture import capture_schedule, distinct_dims, missing, occurrences
from bisector.model.curve import MemoryCurve
from bisector.model.kinds import Kind
from bisector.model.schedule import Schedule, build_schedule, warmed
from bisector.model.spec import InputPlan, ModelSpec, library_imports
from bisector.model.tree import Tree
from bisector.probe.pool import ProbePool, exports, warms
from bisector.probe.types import (
    EquivalenceRequest,
    ProbeCrashed,
    ProbeFailed,
    ProbeKind,
    ProbeOk,
    ProbeRequest,
    ProbeTimedOut,
)
from bisector.store.caches import ControlCache, ResultCache, default_cache_dir
from bisector.store.clean import claim_capture, evict_captures, release_capture

RUN_DIR = ".bisector"


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
        self.runner = runner if runner is not None else self._runner(executor)
        self.interrupted = threading.Event()
        self._capture_lock = threading.Lock()
        self._derived: dict[str, Lab] = {}
        self._derive_lock = threading.Lock()
        self.references = References(self.run)
        self.exports = SharedExports()
        self.tree: Tree | None = None
        self.unsaved: dict[str, str] = {}

    def _runner(self, executor: ThreadPoolExecutor | None) -> Runner:
        """The probe runner on this lab's pool (started here unless given), with the control cache,
        the run's result cache and the shared exports' maker."""
        options, model = self.options, self.model
        if self.pool is None:
            self.pool = ProbePool(
                fresh=options.fresh,
                timeout_s=options.timeout_s,
                mem_cap=options.mem_cap,
                preload=library_imports(model),
                exporter=exports(options.stages),
                warm_export=warms(options.stages, options.probe.exporter),
            )
        cache = ControlCache(
            None if options.cache_dir == "" else Path(options.cache_dir) if options.cache_dir else default_cache_dir()
        )
        runner = Runner(self.pool, self.jobs, cache, self.events, executor=executor, limits=probe_limits(options))
        if self.run is not None:
            runner.keep_failed_in = self.run / "failed-probes"
            if options.cache_dir != "":
                # Keyed by the model's source: a changed model reuses nothing.
                runner.results = ResultCache(self.run / "results", salt=source_hash(model))
        # A probe loading a shared export file has it made first (lab/exports.py).
        runner.prepare_export = lambda path: self.exports.ensure(self, path)
        return runner

    @functools.cached_property
    def source(self) -> str:
        """The hash of the model's source (source_hash): what a shared export is keyed by too."""
        return source_hash(self.model)

    # -- lifetime ---------------------------------------------------------------------------------------

    @property
    def probes(self) -> int:
        """Probes run by this lab and every lab derived from it."""
        return self.runner.probes + sum(d.probes for d in list(self._derived.values()))

    @property
    def reused(self) -> int:
        return self.runner.reused

    @property
    def reused_controls(self) -> int:
        return self.runner.reused_controls

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
                lab.exports = self.exports  # candidates that export alike share one file
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

    # -- whose growth: the traced twins and the native twin ---------------------------------------------

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
        return attribute_shapes(verdict, judged(got.curve, control, self.options, stage))

    # -- the questions ------------------------------------------------------------------------------------------

    def stage(self, stage: str, seed: int | None = None) -> StageResult:
        """Model and control over one stage's schedule; rerun with more iterations while unsure or
        while a clean verdict's floor is above the stage's target (within the time budget); a
        per-call leak that only bytes show is traced to its owners (see owners.py)."""
        options = self.options if seed is None else replace(self.options, seed=seed)
        return StageRun(self, stage, options).result()

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
        unprobeable = self._unprobeable(regions)
        if unprobeable is not None:
            return unprobeable

        def attempt(n: int, scale: int) -> Attempt:
            return self._regions_attempt(stage, regions, root, scale, per_call_only)

        def settled(a: Attempt) -> bool:
            return a.verdict is not None and a.verdict.kind != INCONCLUSIVE

        return retrying(attempt, settled, self.options.retries).value

    def _unprobeable(self, regions: tuple[str, ...]) -> Outcome | None:
        """A failed outcome for regions the model lacks or whose inputs could not be recorded."""
        assert self.tree is not None
        absent = [r for r in regions if r not in self.tree.regions]
        if absent:
            return Outcome(Kind.FAILED, message=f"the model has no {absent[0]!r}")
        blocked = [r for r in regions if r in self.unsaved]
        if blocked:
            return Outcome(
                Kind.FAILED, message=f"inputs of {blocked[0]!r} could not be recorded: {self.unsaved[blocked[0]]}"
            )
        return None

    def _regions_attempt(
        self, stage: str, regions: tuple[str, ...], root: StageResult, scale: int, per_call_only: bool
    ) -> Attempt:
        """One try of regions(): the regions' probe at this scale, judged against the control run as
        often per step as the regions are (scale_control)."""
        assert self.tree is not None
        k = len(regions) if stage == "eager" else 1  # export/inference run a group as one module
        weights = "+".join(self.tree.regions[r].subtree_hash for r in regions)
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
            return Attempt(Outcome(Kind.FAILED, message=result.message), None, final=True)
        if isinstance(result, (ProbeCrashed, ProbeTimedOut)):
            return Attempt(Outcome(Kind.CRASHED, message=result.describe()), None, final=True)
        assert isinstance(result, ProbeOk)
        control = self._control(stage, scale, root)
        scaled = scale_control(control, k) if control is not None else None
        verdict = judged(result.curve, scaled, self.options, stage)
        if needs_owners(verdict):
            twin_control = request.with_(control=True, regions=("",), capture=None, label=f"{stage} control")
            self._inputs_for(traced(request, stage), weights)
            verdict = self._attribute(verdict, request, twin_control, stage, k, extra_key=weights, objects=False)
        return Attempt(outcome_of(verdict, result.curve, scaled), verdict)

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
        self, other: Lab, stage: str, mode: str, rtol: float, atol: float, label: str = "outputs", queued: Any = None
    ) -> dict[str, Any]:
        """This model's outputs against another configuration's (a fix candidate), over this stage's
        shapes: {"equivalent", "max_abs_diff", "max_rel_diff", ...} or {"failed": why}. queued: called
        once the probe is in the runner's queue (Runner.result)."""
        request = ProbeRequest(
            self.model,
            self.plan,
            None,
            self.schedule(stage),
            self.options.probe,
            kind=ProbeKind.EQUIVALENCE,
            equivalence=EquivalenceRequest(other.model, other.options.probe, mode, rtol, atol),
        )
        # The original's outputs are the same for every candidate: kept by the first probe.
        original = {k: v for k, v in request.to_json().items() if k not in ("equivalence", "label")}
        reference = self.references.path(original, source_hash(self.model)) if mode == "onnx" else ""
        request = request.with_(label=label, equivalence=replace(request.equivalence, reference=reference))
        result = self.references.first(reference, lambda: self.runner.result(request, queued))
        if isinstance(result, ProbeOk):
            return dict(result.data)
        if isinstance(result, ProbeFailed):
            return {"failed": result.message}
        return {"failed": result.describe()}
