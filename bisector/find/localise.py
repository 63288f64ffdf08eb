"""Find: from "this model leaks in stage S" to the smallest regions that do.

1. Measure the root per stage against the control (Lab.stage); a clean stage stops there.
2. For each stage that is not clean, record the module tree and every region's real inputs (one
   capture probe, saved once per run), then search the tree (search.py) with an oracle that asks the
   lab about a set of regions (Lab.regions).

Everything a probe measured is kept in the run directory (``.bisector/runs/<model>/``), keyed by
the request and a hash of the model's code and weights: a re-run, a run stopped with Ctrl-C, and
``fix`` after ``find`` reuse what finished.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bisector.common.units import per
from bisector.fixers._upstream import known_bug
from bisector.judge.owners import LIBRARIES, MODEL, NATIVE, top_site
from bisector.judge.retention import hint as retention_hint
from bisector.judge.retention import paths as retention_paths
from bisector.judge.search import Finding, Outcome, Search, SearchState
from bisector.judge.verdict import LEAK, SHAPE_GROWTH, TOOLCHAIN_LEAK
from bisector.lab.measure import log_reasons, stage_summary
from bisector.lab.results import MeasureOptions, MeasureReport, StageResult, stage_order
from bisector.lab.runner import Events, event
from bisector.lab.stage import Interrupted, Lab
from bisector.model.figures import Figures
from bisector.model.spec import InputPlan, ModelSpec
from bisector.model.tree import Tree
from bisector.probe.pool import ProbePool
from bisector.probe.types import STAGES, ProbeOk

MAX_RETENTION_PROBES = 4  # culprits per stage given a retention probe


@dataclass(frozen=True)
class Culprit:
    region: str
    stage: str
    kind: str
    own_code: bool
    type: str
    figures: Figures  # a mapping is taken as its figures
    chain: tuple[tuple[str, str], ...]  # (region, kind) from the root down, probed alone
    hint: str

    def __post_init__(self) -> None:
        if not isinstance(self.figures, Figures):
            object.__setattr__(self, "figures", Figures.of(self.figures))

    def to_json(self) -> dict[str, Any]:
        f = self.figures
        return {
            "region": self.region,
            "stage": self.stage,
            "kind": self.kind,
            "growth_bytes_per_call": f.growth_bytes_per_call,
            "growth_bytes_per_new_shape": f.growth_bytes_per_new_shape,
            "own_code": self.own_code,
            "objects_per_call": f.objects_per_call,
            "objects_per_new_shape": f.objects_per_new_shape,
            "bounded": f.bounded,
            "type": self.type,
            "grown_types": f.top_types or {},
            "growth_metric": f.growth_metric,
            "decided_by": f.decided_by,
            "floor_bytes_per_call": f.floor_bytes_per_call,
            "owners": f.owners,
            "hint": self.hint,
            # What holds the growth, when a retention probe found it (retention.py).
            **({"retention": [dict(r) for r in f.retention]} if f.retention else {}),
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
    reused_controls: int = 0  # of the reused, the controls (reused_probes counts the model's alone)

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
        data["reused_probes"] = self.reused - self.reused_controls
        data["reused_controls"] = self.reused_controls
        data["wall_s"] = round(self.wall_s, 2)
        data["run_dir"] = self.run_dir
        data["complete"] = self.complete
        return data


def toolchain_hint(stage: str, figures: Figures, type_name: str) -> str:
    """A toolchain-leak's advice: not the model's code; the upstream bug when known; workarounds."""
    bug = known_bug(figures, type_name)
    who = "ONNX Runtime's own growth" if stage == "inference" else "torch's own growth per export"
    head = f"{bug}: not your model's code" if bug else f"{who}, not your model's code"
    if stage == "inference":
        return f"{head}; `bisector fix` measures the runtime's session options that contain it"
    ways = "export in a child process, " + ("the eager module" if "ScriptModule" in type_name else "the other exporter")
    return f"{head}; workarounds (bisector fix): {ways}"


def hint_for(stage: str, kind: str, own_code: bool, figures: Figures, type_name: str) -> str:
    if kind == TOOLCHAIN_LEAK:
        return toolchain_hint(stage, figures, type_name)
    held = retention_hint(figures.retention or (), per(stage))
    if held and stage != "inference":
        return held
    types = " ".join(figures.top_types or {})
    tensors = "Tensor" in types
    if stage == "inference":
        if kind == SHAPE_GROWTH:
            return (
                "ONNX Runtime allocates anew for each larger input: bound the dynamic axes, round sizes up to "
                "multiples of 16, or set arena options (bisector fix)"
            )
        return "grows on every ONNX Runtime run: try the runtime's memory options (bisector fix) or a newer onnxruntime"
    if kind == SHAPE_GROWTH:
        if figures.bounded:
            return (
                "memory held for the largest input shape so far (an allocator or workspace): round or bound input sizes"
            )
        return "keeps something per input shape (a cache keyed by shape?): bound the cache or round sizes"
    site = _python_site(figures)
    if stage == "export":
        if not tensors and (figures.objects_per_call or 0) < 1:
            if site:
                return f"Python allocations at {site} kept on every export: free or bound what it keeps there"
            return "native memory kept on every export: look for C extensions or ctypes allocations in its forward"
        return (
            "keeps what it builds on every export: a custom symbolic function or a module-level container "
            "filled while tracing"
        )
    if tensors:
        return (
            "forward keeps tensors alive (a list or dict it appends to, a hook collecting outputs): clear or bound it"
        )
    if (figures.objects_per_call or 0) >= 1:
        return "forward keeps Python objects on every call: look for containers that only grow"
    if site:
        # The owners table names a Python line: the hint must agree (a thread filling bytearrays
        # keeps no object the collector counts, yet it is no native memory).
        return (
            f"Python allocations at {site} grow on every call (bytes or buffers, no object the garbage "
            "collector counts; perhaps a thread the model started): free or bound what it keeps there"
        )
    return "native memory not freed on every call (no Python object kept): look for C extensions or ctypes allocations"


def _python_site(figures: Figures) -> str | None:
    """The model's own Python line that the traced probe found owning the growth, when Python
    allocations explain at least as much of it as native memory does; else None."""
    repeat = (figures.owners or {}).get("repeat") or {}
    groups = repeat.get("groups") or {}
    python = float(groups.get(MODEL) or 0.0) + float(groups.get(LIBRARIES) or 0.0)
    site = top_site(repeat, MODEL) or top_site(repeat, LIBRARIES)
    if site and python > 0 and python >= float(repeat.get(NATIVE) or 0.0):
        return site
    return None


class Finder:
    """One find run over a Lab: root measurements, then one search per stage that is not clean."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    @property
    def tree(self) -> Tree | None:
        return self.lab.tree

    def run_search(self, stage: str, root: StageResult) -> StageSearch:
        lab = self.lab
        if root.kind == TOOLCHAIN_LEAK and stage in ("export", "inference") and root.verdict and root.curve:
            # Growth the exporter or the runtime keeps on every call: nothing in the model's tree to
            # search, but a culprit at the root for its workarounds (fixers that change how the
            # toolchain runs, measured like any other).
            state = SearchState()
            state.tested[("",)] = root.outcome()
            state.culprits.append(Finding("", TOOLCHAIN_LEAK, own_code=False, outcome=root.outcome()))
            state.complete = True
            lab.ensure_captured([])
            return self._stage_search(stage, root, state)
        if root.kind not in (LEAK, SHAPE_GROWTH):
            return StageSearch(stage, root)
        root_outcome = root.outcome() if root.verdict and root.curve else Outcome(root.kind)
        state = SearchState()
        if (
            stage == "inference"
            and root.kind == SHAPE_GROWTH
            and root.verdict is not None
            and root.verdict.bounded is not False
        ):
            # ONNX Runtime's arena grows for each larger input and holds it: a property of the
            # whole session, seen in every region with activations. Probing regions would name
            # each of them; the runtime's settings are the place to fix it.
            state.tested[("",)] = root_outcome
            state.culprits.append(Finding("", SHAPE_GROWTH, own_code=False, outcome=root_outcome))
            state.complete = True
            lab.ensure_captured([])
            return self._stage_search(stage, root, state)
        # The inputs are recorded with the tree on a first run; a re-run records them only for
        # probes whose results are not kept (Lab.regions).
        first = lab.capture_dir is not None and not (lab.capture_dir / "tree.json").exists()
        lab.ensure_captured(
            [lab.schedule(stage, per_call_only=stage == "export" and root.kind == LEAK)] if first else []
        )

        def oracle(regions: tuple[str, ...]) -> Outcome:
            return lab.regions(stage, regions, root)

        with ThreadPoolExecutor(max_workers=lab.jobs, thread_name_prefix=f"bisector-{stage}") as ex:
            search = Search(
                lab.tree,
                oracle,
                executor=ex if lab.jobs > 1 else None,
                state=state,
                own_code_beyond_children=stage == "eager",
            )
            try:
                search.run("", root_outcome)
            except Interrupted:
                pass
        return self._stage_search(stage, root, state)

    def _retention(self, stage: str, found: list[Finding]) -> dict[str, tuple[dict[str, Any], ...]]:
        """What holds each culprit's growth: one retention probe per culprit of the eager stage
        (probe/retention.py), all started at once. A probe that fails leaves the culprit without."""
        if stage != "eager" or self.lab.interrupted.is_set():
            return {}
        futures = {c.region: self.lab.retention(stage, c.region) for c in found[:MAX_RETENTION_PROBES]}
        out = {}
        for region, fut in futures.items():
            try:
                result = fut.result()
            except Exception:  # noqa: BLE001 - evidence for the hint and the fixers, never a failed find
                continue
            if isinstance(result, ProbeOk):
                rows = retention_paths(result.curve.meta.get("retention"), self.lab.model.path)
                if rows:
                    out[region] = rows
        return out

    def _stage_search(self, stage: str, root: StageResult, state: SearchState) -> StageSearch:
        tree = self.lab.tree
        assert tree is not None
        culprits = []
        held = self._retention(stage, [c for c in state.culprits if c.kind in (LEAK, SHAPE_GROWTH)])
        for c in sorted(state.culprits, key=lambda c: c.region):
            region = tree.regions.get(c.region)
            type_name = region.type.rsplit(".", 1)[-1] if region else ""
            chain = tuple((r, o.kind) for r, o in state.path_to(c.region))
            figures = c.outcome.figures
            if c.region in held:
                figures = figures.with_(retention=held[c.region])
            culprits.append(
                Culprit(
                    region=c.region,
                    stage=stage,
                    kind=c.kind,
                    own_code=c.own_code,
                    type=type_name,
                    figures=figures,
                    chain=chain,
                    hint=hint_for(stage, c.kind, c.own_code, figures, type_name),
                )
            )
        return StageSearch(
            stage=stage,
            root=root,
            culprits=tuple(culprits),
            unprobeable={r: o.message for r, o in state.unprobeable.items()},
            inconclusive=tuple(state.inconclusive),
            tested=dict(state.tested),
            complete=state.complete,
        )

    def find(self) -> FindReport:
        lab = self.lab
        started = time.perf_counter()
        stages = stage_order(lab.options.stages)
        results = self._run_stages(stages)
        if lab.tree is None and not lab.interrupted.is_set():
            lab.ensure_captured([])  # the module tree alone, for the report
        ordered = [s for s in STAGES if s in results]
        measure_report = MeasureReport(
            model=lab.model,
            plan=lab.plan,
            stages={s: results[s][0] for s in ordered},
            probes=lab.probes,
            wall_s=time.perf_counter() - started,
            options=lab.options,
        )
        complete = (
            not lab.interrupted.is_set()
            and all(results[s][1].complete for s in ordered)
            and len(ordered) == len(stages)
        )
        return FindReport(
            measure=measure_report,
            tree=lab.tree,
            searches={s: results[s][1] for s in ordered},
            probes=lab.probes,
            reused=lab.reused,
            reused_controls=lab.reused_controls,
            wall_s=time.perf_counter() - started,
            run_dir=str(lab.run),
            complete=complete,
        )

    def _stage_job(self, stage: str) -> tuple[StageResult, StageSearch]:
        """One stage: its verdict, then the search of its regions."""
        lab = self.lab
        begun = time.perf_counter()
        with lab.timings.phase("verdict", stage):
            root = lab.stage(stage)
        log_reasons(root)
        with lab.timings.phase("search", stage):
            search = self.run_search(stage, root)
        named = f"; {len(search.culprits)} culprit{'s' if len(search.culprits) != 1 else ''}" if search.culprits else ""
        summary = stage_summary(root, time.perf_counter() - begun, lab.plan.dims)
        event(lab.events, "stage_done", stage, root.kind, summary + named)
        return root, search

    def _run_stages(self, stages: list[str]) -> dict[str, tuple[StageResult, StageSearch]]:
        """Every stage at once, one thread each. Ctrl-C stops asking new questions, kills the
        running probes and keeps what finished."""
        results: dict[str, tuple[StageResult, StageSearch]] = {}
        with ThreadPoolExecutor(max_workers=len(stages) or 1, thread_name_prefix="bisector-stage") as ex:
            futures = {s: ex.submit(self._stage_job, s) for s in stages}
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
                self.lab.stop()
                for s, f in futures.items():
                    try:
                        results[s] = f.result()
                    except Exception:  # noqa: BLE001 - a stage cut short reports what it has
                        pass
        return results


def find(
    model: ModelSpec,
    plan: InputPlan,
    options: MeasureOptions,
    events: Events | None = None,
    run_dir: str | Path | None = None,
    pool: ProbePool | None = None,
) -> FindReport:
    lab = Lab(model, plan, options, events, run_dir, pool=pool)
    try:
        report = Finder(lab).find()
        if report.complete and not lab.interrupted.is_set():
            lab.release_captures()  # the regions' inputs are needed no more: a re-run records them again
        return report
    finally:
        lab.close()
