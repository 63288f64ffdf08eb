"""Find: from "this model leaks in stage S" to the smallest regions that do.

1. Record the module tree and every region's real inputs (one capture probe, saved once per run).
2. Measure the root per stage against the control (measure.py); a clean stage stops there.
3. For each stage that is not clean, search the tree (search.py) with an oracle that probes a set
   of regions in one child, replaying their recorded inputs, and judges the curve against the
   stage's control (scaled to the number of regions run one after another).

Everything a probe measured is kept in the run directory (``.bisector/runs/<model>/``), keyed by
the request and a hash of the model's code and weights: a re-run, a run stopped with Ctrl-C, and
``fix`` after ``find`` reuse what finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from bisector.capture import capture_schedule, distinct_dims, missing
from bisector.clean import evict_captures
from bisector.curve import MemoryCurve, Sample
from bisector.errors import UserError
from bisector.measure import (
    ControlCache,
    Events,
    MeasureOptions,
    MeasureReport,
    ResultCache,
    Runner,
    StageResult,
    default_cache_dir,
    measure_stage,
    probe_limits,
    owners_of,
    stage_order,
    traced,
)
from bisector.probe.pool import ProbePool
from bisector.probe.types import CAPTURE, STAGES, ProbeCrashed, ProbeFailed, ProbeOk, ProbeRequest, ProbeTimedOut
from bisector.schedule import Schedule, build_schedule
from bisector.search import Outcome, Search, SearchState
from bisector.spec import InputPlan, ModelSpec, library_imports
from bisector.tree import Tree
from bisector.verdict import COUNT_METRICS, GROWS, INCONCLUSIVE, LEAK, SHAPE_GROWTH, Verdict, attribute, judge, needs_owners

RUN_DIR = ".bisector"


class Interrupted(Exception):
    """The run was stopped (Ctrl-C); what finished is kept in the run directory."""


@dataclass(frozen=True)
class Culprit:
    region: str
    stage: str
    kind: str
    own_code: bool
    type: str
    figures: Mapping[str, Any]
    chain: tuple[tuple[str, str], ...]  # (region, kind) from the root down, probed alone
    hint: str

    def to_json(self) -> dict[str, Any]:
        f = self.figures
        return {
            "region": self.region,
            "stage": self.stage,
            "kind": self.kind,
            "growth_bytes_per_call": f.get("growth_bytes_per_call"),
            "growth_bytes_per_new_shape": f.get("growth_bytes_per_new_shape"),
            "own_code": self.own_code,
            "objects_per_call": f.get("objects_per_call"),
            "objects_per_new_shape": f.get("objects_per_new_shape"),
            "bounded": f.get("bounded"),
            "type": self.type,
            "grown_types": f.get("top_types", {}),
            "growth_metric": f.get("growth_metric"),
            "floor_bytes_per_call": f.get("floor_bytes_per_call"),
            "owners": f.get("owners"),
            "hint": self.hint,
        }


@dataclass(frozen=True)
class StageSearch:
    stage: str
    root: StageResult
    culprits: tuple[Culprit, ...] = ()
    unprobeable: Mapping[str, str] = field(default_factory=dict)
    inconclusive: tuple[str, ...] = ()
    tested: Mapping[tuple[str, ...], Outcome] = field(default_factory=dict)
    complete: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root.kind,
            "culprits": [c.to_json() for c in self.culprits],
            "unprobeable": [{"region": r, "reason": why} for r, why in self.unprobeable.items()],
            "inconclusive": list(self.inconclusive),
            "tested": [{"regions": list(k), "kind": o.kind} for k, o in self.tested.items()],
            "complete": self.complete,
        }


@dataclass(frozen=True)
class FindReport:
    measure: MeasureReport
    tree: Tree
    searches: Mapping[str, StageSearch]
    probes: int
    reused: int
    wall_s: float
    run_dir: str
    complete: bool = True

    @property
    def culprits(self) -> list[Culprit]:
        return [c for s in self.searches.values() for c in s.culprits]

    @property
    def verdict(self) -> str:
        return self.measure.verdict

    def to_json(self, samples: bool = True) -> dict[str, Any]:
        data = self.measure.to_json(samples=samples)
        data["culprits"] = [c.to_json() for c in self.culprits]
        data["search"] = {s: r.to_json() for s, r in self.searches.items()}
        data["modules"] = len(self.tree) if self.tree is not None else None  # None: stopped before capture
        data["probes"] = self.probes
        data["reused_probes"] = self.reused
        data["wall_s"] = round(self.wall_s, 2)
        data["run_dir"] = self.run_dir
        data["complete"] = self.complete
        return data


# ---------------------------------------------------------------------------------------------


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
    root.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# bisector's run data: measurements and recorded inputs\n*\n")
    run = root / "runs" / f"{Path(model.path).stem}-{model.name}-{run_key(model, plan, options)}"
    run.mkdir(parents=True, exist_ok=True)
    return run


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


def outcome_of(verdict: Verdict, curve: MemoryCurve, control: MemoryCurve | None) -> Outcome:
    grown_bytes = any(
        s.state == GROWS and s.metric not in COUNT_METRICS for s in verdict.signals if s.phase in ("repeat", "novel")
    )
    phase = "repeat" if verdict.kind == LEAK else "novel"
    grown = curve.type_growth.get(phase) or {}
    ctrl = (control.type_growth.get(phase) or {}) if control else {}
    top = {k: n - ctrl.get(k, 0) for k, n in grown.items() if n - ctrl.get(k, 0) > 0}
    figures = {
        "growth_bytes_per_call": verdict.growth_bytes_per_call,
        "growth_bytes_per_new_shape": verdict.growth_bytes_per_new_shape,
        "objects_per_call": verdict.objects_per_call,
        "objects_per_new_shape": verdict.objects_per_new_shape,
        "bounded": verdict.bounded,
        "noise_bytes": verdict.noise_bytes,
        "growth_metric": verdict.growth_metric,
        "floor_bytes_per_call": verdict.floor_bytes_per_call,
        "owners": dict(verdict.owners) if verdict.owners else None,
        "exact": not grown_bytes,
        "repeat_steps": next((s.steps for s in verdict.signals if s.metric == verdict.metric and s.phase == "repeat"), 0),
        "novel_steps": next((s.steps for s in verdict.signals if s.metric == verdict.metric and s.phase == "novel"), 0),
        "top_types": dict(sorted(top.items(), key=lambda kv: -kv[1])[:4]),
        # Memory in place before the measured calls (setup, and any warm-up a fix adds).
        "rss_before_loop": curve.meta.get("rss_before_loop"),
        "control_rss_before_loop": control.meta.get("rss_before_loop") if control is not None else None,
        # The largest RSS over the whole schedule: the steady state a fix's trade-off is shown against.
        "rss_peak": max(curve.series("rss"), default=None),
        # The GPU working set at its largest (NVML): what a gpu_mem_limit can be sized from.
        "peak_gpu_bytes": max(curve.series("gpu"), default=None),
        # The curves themselves, for the HTML report's per-culprit and before/after charts
        # (Culprit.to_json and Evaluation.to_json pick their keys, so --json does not grow).
        "samples": [s.to_json() for s in curve.samples],
        "control_samples": [s.to_json() for s in control.samples] if control is not None else [],
    }
    return Outcome(verdict.kind, figures, "; ".join(verdict.reasons))


def hint_for(stage: str, kind: str, own_code: bool, figures: Mapping[str, Any], type_name: str) -> str:
    types = " ".join(figures.get("top_types", {}))
    tensors = "Tensor" in types
    if stage == "inference":
        if kind == SHAPE_GROWTH:
            return "ONNX Runtime allocates anew for each larger input: bound the dynamic axes, round sizes up to multiples of 16, or set arena options (bisector fix)"
        return "grows on every ONNX Runtime run: try the runtime's memory options (bisector fix) or a newer onnxruntime"
    if kind == SHAPE_GROWTH:
        if figures.get("bounded"):
            return "memory held for the largest input shape so far (an allocator or workspace): round or bound input sizes"
        return "keeps something per input shape (a cache keyed by shape?): bound the cache or round sizes"
    if stage == "export":
        if not tensors and (figures.get("objects_per_call") or 0) < 1:
            return "native memory kept on every export: look for C extensions or ctypes allocations in its forward"
        return "keeps what it builds on every export: a custom symbolic function or a module-level container filled while tracing"
    if tensors:
        return "forward keeps tensors alive (a list or dict it appends to, a hook collecting outputs): clear or bound it"
    if (figures.get("objects_per_call") or 0) >= 1:
        return "forward keeps Python objects on every call: look for containers that only grow"
    return "native memory not freed on every call (no Python object kept): look for C extensions or ctypes allocations"


class Finder:
    """One find run: capture, root measurements, one search per stage that is not clean."""

    def __init__(
        self,
        model: ModelSpec,
        plan: InputPlan,
        options: MeasureOptions,
        events: Events | None = None,
        run_dir: str | Path | None = None,
        pool: ProbePool | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.model = model
        self.plan = plan
        self.options = options
        self.events = events or Events()
        self.run = prepare_run_dir(run_dir, model, plan, options)
        # Recorded inputs depend on the model, its inputs and the seed, not on how it is exported or
        # run: every fix candidate that changes only options shares them.
        self.capture_dir = self.run.parent.parent / "captures" / capture_key(model, plan, options)
        self._own_pool = pool is None
        self.pool = pool or ProbePool(
            fresh=options.fresh, timeout_s=options.timeout_s, mem_cap=options.mem_cap, preload=library_imports(model)
        )
        self.jobs = options.jobs or (os.cpu_count() or 1)
        control_cache = ControlCache(None if options.cache_dir == "" else Path(options.cache_dir) if options.cache_dir else default_cache_dir())
        self.runner = Runner(self.pool, self.jobs, control_cache, self.events, executor=executor, limits=probe_limits(options))
        self.runner.keep_failed_in = self.run / "failed-probes"
        self.interrupted = threading.Event()
        self._capture_lock = threading.Lock()
        self.tree: Tree | None = None
        self.unsaved: dict[str, str] = {}

    def close(self) -> None:
        if self._own_pool:
            self.pool.close()  # first: a probe still running for a failed stage is killed, not awaited
        self.runner.close()

    # -- capture ----------------------------------------------------------------------------------

    def schedule(self, stage: str, scale: int = 1, per_call_only: bool = False) -> Schedule:
        profile = self.options.profiles[stage]
        if per_call_only:
            # Searching regions for a per-call leak whose stage is already known to leak: the
            # repeated shapes alone tell, and with exports at ~1 s each, four deltas are enough.
            profile = replace(profile, novel=0, within=0, repeat_passes=min(profile.repeat_passes, max(2, -(-4 // profile.shapes))))
        if scale > 1:
            profile = profile.scaled(scale)
        return build_schedule(self.plan.dims, profile, self.options.seed)

    def ensure_captured(self, schedules: list[Schedule]) -> None:
        """Record the regions' inputs for every shape of these schedules that has none yet, and the
        module tree (an empty list of schedules records the tree alone)."""
        with self._capture_lock:
            tree_file = self.capture_dir / "tree.json"
            todo = missing(self.capture_dir, distinct_dims(schedules))
            known = json.loads(tree_file.read_text()) if tree_file.exists() else None
            if known is not None and self.tree is None:
                self.tree = Tree.from_json(known["tree"])
                self.unsaved = dict(known.get("unsaved", {}))
            if not todo and known is not None:
                return
            request = ProbeRequest(
                self.model, self.plan, CAPTURE, capture_schedule(todo, self.options.seed),
                self.options.probe, capture=str(self.capture_dir), label="record inputs" if todo else "module tree",
            )
            result = self.runner.submit(request).result()
            kept = f" (probe folder kept: {result.probe_dir})" if getattr(result, "probe_dir", "") else ""
            if isinstance(result, ProbeFailed):
                raise UserError(f"recording the regions' inputs failed: {result.message}{kept}", detail=result.traceback)
            if not isinstance(result, ProbeOk):
                raise UserError(f"recording the regions' inputs {result.describe()}{kept}", detail=result.tail)
            self.unsaved.update(result.data.get("unsaved", {}))
            # A tree from a run with forwards knows which modules were called; keep that one.
            if known is None or (todo and not known.get("called_known")):
                self.tree = Tree.from_json(result.data["tree"])
                self.capture_dir.mkdir(parents=True, exist_ok=True)
                tmp = tree_file.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"tree": result.data["tree"], "unsaved": self.unsaved, "called_known": bool(todo)}))
                os.replace(tmp, tree_file)
            evict_captures(self.capture_dir, self.model.path)  # past the cap, the oldest other captures go

    # -- the oracle ---------------------------------------------------------------------------------

    def oracle(self, stage: str, root: StageResult) -> Any:
        per_call_only = stage == "export" and root.kind == LEAK  # exports are the costly probes
        count_phases = ("repeat",) if stage == "export" else ("repeat", "novel", "within")

        def probe(regions: tuple[str, ...]) -> Outcome:
            if self.interrupted.is_set():
                raise Interrupted()
            blocked = [r for r in regions if r in self.unsaved]
            if blocked:
                return Outcome("failed", message=f"inputs of {blocked[0]!r} could not be recorded: {self.unsaved[blocked[0]]}")
            verdict = None
            for attempt in range(self.options.retries + 1):
                scale = 2**attempt
                schedule = self.schedule(stage, scale, per_call_only)
                self.ensure_captured([schedule])
                label = f"{stage} {', '.join(r or '<root>' for r in regions)}" + (f" x{scale}" if scale > 1 else "")
                request = ProbeRequest(
                    self.model, self.plan, stage, schedule, self.options.probe, regions=regions,
                    capture=str(self.capture_dir), label=label,
                )
                assert self.tree is not None
                weights = "+".join(self.tree.regions[r].subtree_hash if r in self.tree else r for r in regions)
                result = self.runner.submit(request, extra_key=weights).result()
                if self.interrupted.is_set():
                    raise Interrupted()
                if isinstance(result, ProbeFailed):
                    return Outcome("failed", message=result.message)
                if isinstance(result, (ProbeCrashed, ProbeTimedOut)):
                    return Outcome("crashed", message=result.describe())
                assert isinstance(result, ProbeOk)
                control = self.control(stage, scale, root)
                k = len(regions) if stage == "eager" else 1  # export/inference run a group as one module
                scaled = scale_control(control, k) if control is not None else None
                verdict = judge(result.curve, scaled, self.options.bands, self.options.metric, count_phases=count_phases)
                if needs_owners(verdict):
                    # Heap growth alone: the region's own, or the exporter's for a larger graph?
                    twin = traced(request, stage)
                    self.ensure_captured([twin.schedule])
                    got = self.runner.submit(twin, extra_key=weights)
                    # The control run as often per step as the regions are (scale_control).
                    twin_control = traced(request.with_(control=True, regions=("",), capture=None, label=f"{stage} control"), stage)
                    traced_control = self.runner.submit(twin_control).result()
                    verdict = attribute(verdict, owners_of(got.result()), stage, scaled_owners(owners_of(traced_control), k))
                if verdict.kind != INCONCLUSIVE:
                    break
            assert verdict is not None
            return outcome_of(verdict, result.curve, scaled)

        return probe

    def control(self, stage: str, scale: int, root: StageResult) -> MemoryCurve | None:
        if scale == 1 and root.control is not None and root.attempts == 1:
            return root.control
        schedule = self.schedule(stage, scale)
        request = ProbeRequest(self.model, self.plan, stage, schedule, self.options.probe, control=True, label=f"{stage} control x{scale}")
        result = self.runner.submit(request).result()
        return result.curve if isinstance(result, ProbeOk) else None

    # -- the run ------------------------------------------------------------------------------------

    def run_search(self, stage: str, root: StageResult) -> StageSearch:
        if root.kind not in (LEAK, SHAPE_GROWTH):
            return StageSearch(stage, root)
        root_outcome = outcome_of(root.verdict, root.curve, root.control) if root.verdict and root.curve else Outcome(root.kind)
        state = SearchState()
        if stage == "inference" and root.kind == SHAPE_GROWTH and root.verdict is not None and root.verdict.bounded is not False:
            # ONNX Runtime's arena grows for each larger input and holds it: a property of the
            # whole session, seen in every region with activations. Probing regions would name
            # each of them; the runtime's settings are the place to fix it.
            from bisector.search import Culprit as Found

            state.tested[("",)] = root_outcome
            state.culprits.append(Found("", SHAPE_GROWTH, own_code=False, outcome=root_outcome))
            state.complete = True
            self.ensure_captured([])
            return self._stage_search(stage, root, state)
        self.ensure_captured([self.schedule(stage, per_call_only=stage == "export" and root.kind == LEAK)])
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix=f"bisector-{stage}") as ex:
            search = Search(self.tree, self.oracle(stage, root), executor=ex if self.jobs > 1 else None, state=state,
                            own_code_beyond_children=stage == "eager")
            try:
                search.run("", root_outcome)
            except Interrupted:
                pass
        return self._stage_search(stage, root, state)

    def _stage_search(self, stage: str, root: StageResult, state: SearchState) -> StageSearch:
        assert self.tree is not None
        culprits = []
        for c in sorted(state.culprits, key=lambda c: c.region):
            region = self.tree.regions.get(c.region)
            type_name = region.type.rsplit(".", 1)[-1] if region else ""
            chain = tuple((r, o.kind) for r, o in state.path_to(c.region))
            culprits.append(
                Culprit(
                    region=c.region, stage=stage, kind=c.kind, own_code=c.own_code, type=type_name,
                    figures=dict(c.outcome.figures), chain=chain,
                    hint=hint_for(stage, c.kind, c.own_code, c.outcome.figures, type_name),
                )
            )
        return StageSearch(
            stage=stage, root=root, culprits=tuple(culprits),
            unprobeable={r: o.message for r, o in state.unprobeable.items()},
            inconclusive=tuple(state.inconclusive), tested=dict(state.tested), complete=state.complete,
        )

    def prepare(self, stages: list[str]) -> None:
        """Keep results keyed by the model's source; inputs are recorded later, only if a search
        needs them (a clean stage, or growth that belongs to the runtime, needs none)."""
        if self.runner.results is None and self.options.cache_dir != "":
            self.runner.results = ResultCache(self.run / "results", salt=source_hash(self.model))

    def find(self) -> FindReport:
        started = time.perf_counter()
        stages = stage_order(self.options.stages)
        self.prepare(stages)

        def stage_job(stage: str) -> tuple[StageResult, StageSearch]:
            root = measure_stage(self.runner, self.model, self.plan, stage, self.options)
            return root, self.run_search(stage, root)

        results: dict[str, tuple[StageResult, StageSearch]] = {}
        with ThreadPoolExecutor(max_workers=len(stages) or 1, thread_name_prefix="bisector-stage") as ex:
            futures = {s: ex.submit(stage_job, s) for s in stages}
            try:
                for s, f in futures.items():
                    while True:
                        try:
                            results[s] = f.result(timeout=0.25)
                            break
                        except TimeoutError:
                            continue
            except KeyboardInterrupt:
                # Stop asking new questions, kill the running probes, keep what finished.
                self.interrupted.set()
                self.pool.close()
                for s, f in futures.items():
                    try:
                        results[s] = f.result()
                    except Exception:  # noqa: BLE001 - a stage cut short reports what it has
                        pass
        if self.tree is None and not self.interrupted.is_set():
            self.ensure_captured([])  # the module tree alone, for the report
        ordered = [s for s in STAGES if s in results]
        measure_report = MeasureReport(
            model=self.model, plan=self.plan, stages={s: results[s][0] for s in ordered},
            probes=self.runner.probes, wall_s=time.perf_counter() - started, options=self.options,
        )
        complete = not self.interrupted.is_set() and all(results[s][1].complete for s in ordered) and len(ordered) == len(stages)
        return FindReport(
            measure=measure_report, tree=self.tree, searches={s: results[s][1] for s in ordered},
            probes=self.runner.probes, reused=self.runner.reused, wall_s=time.perf_counter() - started,
            run_dir=str(self.run), complete=complete,
        )


def find(
    model: ModelSpec,
    plan: InputPlan,
    options: MeasureOptions,
    events: Events | None = None,
    run_dir: str | Path | None = None,
    pool: ProbePool | None = None,
) -> FindReport:
    finder = Finder(model, plan, options, events, run_dir, pool)
    try:
        return finder.find()
    finally:
        finder.close()

