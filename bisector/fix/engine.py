"""Repair: fixers propose, probes re-measure, outputs are compared, and only what flattens the
curve is kept.

For each culprit of a find run and each candidate a fixer proposes:
1. apply it: merged probe options (export, runtime, inputs) and/or a shadow copy of the user's
   files with the edits (the originals are never touched here);
2. re-measure the whole model in the culprit's stage against its control, then the culprit region
   alone (with inputs recorded from the edited model);
3. compare outputs with the original's on the schedule's inputs (max absolute and relative
   difference);
4. keep it when the region's verdict becomes clean or its growth drops by at least 90%, the whole
   model's growth drops by the culprit's share, outputs are equivalent within tolerance, and the
   whole model still passes measured again with another seed. A candidate that changes outputs
   by design (padding) is kept only with ``allow_output_changes``.
Kept fixes are ranked by memory saved, then by how small the change is; when no candidate makes
the culprit clean, pairs of the ones that helped most with every other are tried together.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bisector.common.contract import toolchain_versions
from bisector.common.project import project_root
from bisector.common.source_text import SourceError, encode_edit, read_source
from bisector.common.units import format_bytes, staged_unit
from bisector.find.localise import Culprit, FindReport
from bisector.fixers import FixTarget, addresses, all_fixers, select
from bisector.fixers.base import UNSUPPORTED_OP  # stdlib only: a stage the exporter could not get through
from bisector.judge.ceiling import over_budget, project, stage_ceilings
from bisector.judge.search import Outcome
from bisector.judge.verdict import CLEAN, LEAK
from bisector.lab.results import StageResult, outcome_of
from bisector.lab.stage import Interrupted, Lab
from bisector.lab.timings import PhaseTimes
from bisector.model.choices import choose_exporter, exporter_in_message
from bisector.model.kinds import Kind
from bisector.model.spec import ModelSpec
from bisector.probe.types import merge_overrides

KEEP_DROP = 0.9  # growth must drop by at least this share
MAX_PAIRS = 10
MAX_SOURCE_BYTES = 400_000


@dataclass(frozen=True)
class Evaluation:
    """What one candidate (or a combination) did, measured."""

    fixers: tuple[str, ...]
    summary: str
    region: str
    stage: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]  # the region alone
    after_model: Mapping[str, Any]  # the whole model in the same stage
    equivalent: bool | None
    max_abs_diff: float | None
    max_rel_diff: float | None
    kept: bool
    reason: str
    changes_outputs: bool
    size: int
    edits: tuple[Any, ...] = ()
    probe: Mapping[str, Any] = field(default_factory=dict)
    saved: float = 0.0  # bytes (or objects) per call or per new shape, as before - after
    upfront_bytes: float | None = None  # memory the fix holds from the start (a warm-up's arena)
    removes_behaviour: str = ""  # what the fix takes away that other code reads ("" keeps behaviour)
    # The whole model's largest RSS over the declared range, without and with the fix, and the
    # growth over the range the fix prevents (what its upfront cost is weighed against).
    steady_before_bytes: float | None = None
    steady_after_bytes: float | None = None
    prevented_bytes: float | None = None
    bound: int | None = None  # the entries the fix lets the container keep (judged past them)
    # With --budget, for a culprit whose stage's projected peak is over it: the budget, and the
    # whole model's projected peak at the largest declared input with the fix (ceiling.py). The fix
    # is then judged by how far under the budget it brings the peak (costs_more_than_it_saves, rank).
    budget_bytes: float | None = None
    peak_after_bytes: float | None = None

    @property
    def headroom_bytes(self) -> float | None:
        """How far under the budget the fix brings the peak (negative: still over it)."""
        if self.budget_bytes is None or self.peak_after_bytes is None:
            return None
        return self.budget_bytes - self.peak_after_bytes

    @property
    def fixer(self) -> str:
        return "+".join(self.fixers)

    def to_json(self) -> dict[str, Any]:
        return {
            "fixer": self.fixer,
            "summary": self.summary,
            "region": self.region,
            "stage": self.stage,
            "before_bytes_per_call": self.before.get("growth_bytes_per_call"),
            "after_bytes_per_call": self.after.get("growth_bytes_per_call"),
            "before_bytes_per_new_shape": self.before.get("growth_bytes_per_new_shape"),
            "after_bytes_per_new_shape": self.after.get("growth_bytes_per_new_shape"),
            "before_objects_per_call": self.before.get("objects_per_call"),
            "after_objects_per_call": self.after.get("objects_per_call"),
            "before_objects_per_new_shape": self.before.get("objects_per_new_shape"),
            "after_objects_per_new_shape": self.after.get("objects_per_new_shape"),
            "judged_on": growth(self.before, self.before.get("kind", LEAK))[1],
            "before_kind": self.before.get("kind"),
            "after_kind": self.after.get("kind"),
            "after_model_kind": self.after_model.get("kind"),
            "equivalent": self.equivalent,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "changes_outputs": self.changes_outputs,
            "kept": self.kept,
            "reason": self.reason,
            "size": self.size,
            "upfront_bytes": self.upfront_bytes,
            "removes_behaviour": self.removes_behaviour,
            "steady_before_bytes": self.steady_before_bytes,
            "steady_after_bytes": self.steady_after_bytes,
            "prevented_bytes": self.prevented_bytes,
            "bound": self.bound,
            "costs_more_than_it_saves": costs_more_than_it_saves(self),
            "budget_bytes": self.budget_bytes,
            "peak_after_bytes": self.peak_after_bytes,
            "headroom_bytes": self.headroom_bytes,
            "probe": dict(self.probe),
            "edits": [{"path": e.path, "summary": e.summary} for e in self.edits],
        }


@dataclass(frozen=True)
class FixReport:
    find: FindReport
    evaluations: tuple[Evaluation, ...]
    probes: int
    wall_s: float
    timings: PhaseTimes = PhaseTimes()  # find's and repair's phases (bisector/lab/timings.py)

    @property
    def kept(self) -> list[Evaluation]:
        return [e for e in self.evaluations if e.kept]

    def fixed(self, c: Culprit) -> bool:
        """A kept fix for the culprit; for a stage that could not run, one with which it also
        measures clean (running but leaking is the next thing to fix, not fixed)."""
        kept = [e for e in self.for_culprit(c) if e.kept]
        if c.kind == UNSUPPORTED_OP:
            return any(e.after_model.get("kind") == CLEAN for e in kept)
        return bool(kept)

    def for_culprit(self, c: Culprit) -> list[Evaluation]:
        return [e for e in self.evaluations if e.region == c.region and e.stage == c.stage]

    def to_json(self) -> dict[str, Any]:
        data = self.find.to_json()
        data["fixes"] = [e.to_json() for e in self.evaluations]
        data["probes"] = self.find.probes + self.probes
        data["wall_s"] = round(self.find.wall_s + self.wall_s, 2)
        data["timings"] = self.timings.to_json()
        return data


# ---------------------------------------------------------------------------------------------


def user_sources(model: ModelSpec) -> dict[str, str]:
    """The model file and the user's own modules it imports (beside it, transitively): what
    source-editing fixers may change. Installed packages are never among them."""

    folder = Path(model.path).resolve().parent
    todo = [Path(model.path).resolve()]
    out: dict[str, str] = {}
    while todo:
        f = todo.pop()
        if str(f) in out or not f.is_file():
            continue
        try:
            if f.stat().st_size > MAX_SOURCE_BYTES:
                continue
            text = read_source(f)  # as Python reads it: its encoding, no BOM, "\n" endings
            tree = ast.parse(text)
        except (OSError, SourceError, SyntaxError):
            continue
        out[str(f)] = text
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]  # absolute, or relative to the model's folder: both resolved below
            for name in names:
                parts = name.split(".")
                for candidate in (folder.joinpath(*parts).with_suffix(".py"), folder.joinpath(*parts, "__init__.py")):
                    if candidate.is_file():
                        todo.append(candidate.resolve())
    return out


def registration_site(model: ModelSpec, region: str) -> str:
    """Where the user's code registers a hook on this region (`self.proj.register_forward_hook(...)`
    for region `proj`), as file:line relative to the model's folder; "" when none. A culprit whose
    own code is torch's (a Linear) leaks through a hook its parent registered there."""

    if not region:
        return ""

    last = region.split(".")[-1]
    folder = project_root(model.path)
    for path, text in user_sources(model).items():
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and "hook" in node.func.attr
                and node.func.attr.startswith("register_")
            ):
                owner = ast.unparse(node.func.value)
                if owner.split(".")[-1].split("[")[0] == last or owner.endswith(f"[{last}]"):
                    try:
                        rel = Path(path).resolve().relative_to(folder)
                    except ValueError:
                        rel = Path(path).name
                    return f"{rel}:{node.lineno}"
    return ""


def shadow_copy(model: ModelSpec, edits: Iterable[Any], root: Path) -> ModelSpec:
    """A copy of the model's folder (its package, if it is in one) with the edits applied; the
    model spec pointing into it. The user's files stay as they are."""
    src = Path(model.path).resolve().parent
    top = src
    while (top / "__init__.py").exists() and (top.parent / "__init__.py").exists():
        top = top.parent
    if (top / "__init__.py").exists():
        top = top.parent
    edits = list(edits)
    key = hashlib.sha256(repr(sorted((e.path, e.after) for e in edits)).encode()).hexdigest()[:12]
    dest_root = root / key
    dest = dest_root / src.relative_to(top) if src != top else dest_root
    if not dest_root.exists():
        tmp = root / f"{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        for f in src.rglob("*.py") if src != top else top.glob("*.py"):
            if any(part.startswith(".") or part == "__pycache__" for part in f.relative_to(top).parts):
                continue
            target = tmp / f.relative_to(top)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        for e in edits:
            target = tmp / Path(e.path).resolve().relative_to(top)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encode_edit(e.path, e.before, e.after))  # the user's endings and encoding
        try:
            os.replace(tmp, dest_root)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another thread made the same copy
    return replace(model, path=str(dest / Path(model.path).name))


def growth(figures: Mapping[str, Any], kind: str) -> tuple[float, str]:
    """The figure a fix must bring down: exact object counts when the culprit was judged on them,
    else bytes; per call for a leak, per new shape for shape-growth."""
    exact = bool(figures.get("exact"))
    if kind in (LEAK, Kind.TOOLCHAIN_LEAK):  # the toolchain's own growth is per call too
        if exact and figures.get("objects_per_call") is not None:
            return float(figures["objects_per_call"]), "objects/call"
        return float(figures.get("growth_bytes_per_call") or 0.0), "bytes/call"
    if exact and figures.get("objects_per_new_shape") is not None:
        return float(figures["objects_per_new_shape"]), "objects/new shape"
    return float(figures.get("growth_bytes_per_new_shape") or 0.0), "bytes/new shape"


def warm_calls(c: Culprit, bound: int | None) -> int:
    """A fix that bounds a per-call container to N entries is measured after N warm-up calls: a
    leak adds at least one entry a call, so the container is full before the repeat phase, however
    few shapes the schedule repeats (a tensor kept to 8 rows, with one shape, filled for 8 calls)."""
    return int(bound) if bound and c.kind == LEAK else 0


def holds(c: Culprit, stage: StageResult | None) -> bool:
    """The culprit's stage measured again after a fix: clean, or (for a growth) down by KEEP_DROP
    against the culprit's own figure; for a stage that could not run, that it runs and is clean."""
    if stage is None or stage.verdict is None:
        return False
    if stage.kind == CLEAN:
        return True
    if c.kind == UNSUPPORTED_OP:
        return False
    before, _ = growth(c.figures, c.kind)
    after = growth(outcome_of(stage.verdict, stage.curve, stage.control).figures, c.kind)[0]
    return before > 0 and after <= (1 - KEEP_DROP) * before


def _failed_exporter(root: StageResult | None) -> str | None:
    """The exporter a failed stage used, from its message ("... with the torchscript exporter
    failed"): a failed stage has no curve to say it."""

    message = getattr(getattr(root, "failure", None), "message", "") or ""
    return exporter_in_message(message)


def region_total(figures: Mapping[str, Any], kind: str, unit: str, share: float) -> float:
    """What the culprit's region leaks alone (children included), in growth()'s unit: the share
    itself, except for a region named for what it leaks beyond its children."""
    if not figures.get("beyond_children") or not unit.startswith("objects"):
        return share
    key = "region_objects_per_call" if kind == LEAK else "region_objects_per_new_shape"
    return float(figures.get(key) or share)


def past_bound(
    figures: Mapping[str, Any], kind: str, bound: int, before: Mapping[str, Any]
) -> tuple[float, float, str] | None:
    """A bounded container's growth once it is full: (after, before, unit) per call (a leak) or per
    new shape, fitted over the curve's samples past the first `bound` calls or distinct shapes.
    A memo bounded to N entries still grows over its first N new shapes, then stops: it is judged on
    what follows, not averaged over the whole range. Judged on objects (the entries it holds) when
    objects grew before, else on the bytes metric that decided. None when the schedule does not
    reach past the bound (too few samples to judge: the whole range decides, as for any fix)."""
    per = "call" if kind == LEAK else "new shape"
    objects_before = before.get("objects_per_call" if kind == LEAK else "objects_per_new_shape")
    if objects_before:
        metric, before_rate, unit = "objects", float(objects_before), f"objects/{per}"
    else:
        metric = str(figures.get("growth_metric") or before.get("growth_metric") or "rss")
        before_rate, unit = growth(before, kind)[0], f"bytes/{per}"
    seen: set[tuple[Any, ...]] = set()
    tail: list[float] = []
    for n, s in enumerate(figures.get("samples") or (), 1):
        seen.add(tuple(sorted((s.get("dims") or {}).items())))
        entries = n if kind == LEAK else len(seen)
        phase = "repeat" if kind == LEAK else "novel"
        if s.get("phase") == phase and entries > bound and s.get(metric) is not None:
            tail.append(float(s[metric]))
    if len(tail) < 3:
        return None
    slope = statistics.linear_regression(range(len(tail)), tail).slope
    return max(0.0, slope), before_rate, unit


def flat_past_bound(figures: Mapping[str, Any], kind: str, bound: int | None, before: Mapping[str, Any]) -> str:
    """Why a bounded fix counts as flat ("bounded at 8: +0.0 objects/new shape past the first 8,
    was +3.0"), or "" when it does not (no bound, too few samples past it, or still growing)."""
    if bound is None or kind not in (LEAK, Kind.SHAPE_GROWTH):
        return ""
    judged = past_bound(figures, kind, bound, before)
    if judged is None:
        return ""
    after, was, unit = judged
    if was <= 0 or after > (1 - KEEP_DROP) * was:
        return ""
    first = "calls" if kind == LEAK else "new shapes"
    return f"bounded at {bound}: {_fmt(after, unit)} past the first {bound} {first}, was {_fmt(was, unit)}"


def _figures(o: Outcome) -> dict[str, Any]:
    return {"kind": o.kind, **dict(o.figures), "message": o.message}


def _fmt(value: float, unit: str) -> str:

    if unit.startswith("bytes"):
        return f"{format_bytes(value, signed=True)}/{unit.split('/', 1)[1]}"
    return f"{value:+.1f} {unit}"


class Repairer:
    """Tries every candidate the fixers propose for each culprit, on labs derived from the find
    run's lab (same pool, same run directory), and keeps what flattens the curve."""

    def __init__(
        self,
        lab: Lab,
        report: FindReport,
        allow_output_changes: bool = False,
        fixers: Iterable[Any] | None = None,
        only: Iterable[str] = (),
        rtol: float = 1e-3,
        atol: float = 1e-4,
        budget: float | None = None,
        culprits: Iterable[Culprit] | None = None,
    ) -> None:
        """budget: bytes (--budget); a culprit whose stage's projected peak is over it has its fixes
        judged by how far under it they bring the peak. culprits: only these of the report's
        (None: every one)."""

        self.lab = lab
        self.report = report
        self.budget = budget
        self.only = None if culprits is None else {(c.region, c.stage, c.kind) for c in culprits}
        self.allow_output_changes = allow_output_changes
        chosen = list(fixers) if fixers is not None else all_fixers()
        self.fixers = select(chosen, only)  # a family's name (python-leaks) selects its members
        self.rtol, self.atol = rtol, atol
        if lab.run is None:
            raise ValueError("repair needs a lab that keeps a run directory (its candidates' copies go there)")
        self.shadow_root = lab.run / "candidates"
        self._before: dict[str, Mapping[str, Any]] = {}
        self.probes_before = lab.probes

    # -- configurations ---------------------------------------------------------------------------

    def target(self, c: Culprit) -> Any:

        root = self.report.measure.stages.get(c.stage)
        meta = dict(root.curve.meta) if root is not None and root.curve is not None else {}
        dims = dict(self.lab.plan.dims)
        region = self.report.tree.regions.get(c.region)
        return FixTarget(
            stage=c.stage,
            kind=c.kind,
            region=c.region,
            region_type=region.type if region else "",
            own_code=c.own_code,
            figures=dict(c.figures),
            exporter=choose_exporter(meta.get("exporter"), self.lab.options.probe.exporter, _failed_exporter(root)),
            device=meta.get("device", "cpu"),
            dims=dims,
            fixed_inputs=not self.lab.plan.dynamic_symbols,
            sources=user_sources(self.lab.model),
            onnxruntime_opset=runtime_opset(),
        )

    # -- measuring a candidate ----------------------------------------------------------------------

    def derive(self, c: Culprit, model: ModelSpec, probe: Mapping[str, Any], bound: int | None) -> Any:
        """The lab for a candidate, warmed up past its bound (warm_calls) when it declares one."""
        calls = warm_calls(c, bound)
        return self.lab.derive(model, probe, warm_calls=calls) if calls else self.lab.derive(model, probe)

    def measure(
        self,
        c: Culprit,
        model: ModelSpec,
        probe: Mapping[str, Any],
        bound: int | None = None,
        label: str = "",
        region: Outcome | None = None,
    ) -> tuple[Outcome, Outcome]:
        """The culprit region alone (unless already measured: region) and the whole model, in the
        culprit's stage, as the candidate leaves them. Raises CandidateFailed when the changed model
        does not run."""
        try:
            with self.lab.timings.phase("build", label):
                lab = self.derive(c, model, probe, bound)
        except Exception as exc:  # noqa: BLE001 - the edited model may not even build: a result
            raise CandidateFailed(f"the changed model does not run: {exc}") from None
        with self.lab.timings.phase("measure", label):
            return self._measure(c, lab, region)

    def region_first(
        self, c: Culprit, model: ModelSpec, probe: Mapping[str, Any], bound: int | None, label: str
    ) -> Outcome | None:
        """The culprit's region measured before the whole model, where that asks the same question
        find's stage already answered the control part of: a candidate whose region is not flat is
        dropped on that alone (decide never reads the whole model then). None where the region must
        wait for the candidate's own stage result: a stage that could not run, an export (its region
        schedule depends on the stage's verdict), a budget (judged on the whole model's peak), or a
        candidate whose control is not find's (other probe options, warm-up or hooks)."""
        find_root = self.report.measure.stages.get(c.stage)
        if (
            not c.region
            or c.kind == UNSUPPORTED_OP
            or c.stage == "export"
            or find_root is None
            or find_root.verdict is None
            or self.budget is not None
            or self.lab.plan.use_hook
        ):
            return None
        try:
            with self.lab.timings.phase("build", label):
                lab = self.derive(c, model, probe, bound)
        except Exception:  # noqa: BLE001 - measure() says why the changed model does not run
            return None
        if lab.options.probe != self.lab.options.probe or lab.options.profiles != self.lab.options.profiles:
            return None
        with self.lab.timings.phase("measure", f"{label} (region first)"):
            try:
                return lab.regions(c.stage, (c.region,), find_root)
            except Interrupted:
                raise
            except Exception:  # noqa: BLE001 - measured again the usual way, which says why
                return None

    def _measure(self, c: Culprit, lab: Lab, region: Outcome | None = None) -> tuple[Outcome, Outcome]:
        root = lab.stage(c.stage)
        if root.verdict is None:
            why = getattr(root.failure, "message", None) or (root.failure.describe() if root.failure else root.kind)
            raise CandidateFailed(f"{c.stage} {root.kind}: {why}")
        model_outcome = root.outcome()
        if c.region == "":
            return model_outcome, model_outcome
        if region is not None:
            return region, model_outcome
        try:
            return lab.regions(c.stage, (c.region,), root), model_outcome
        except Interrupted:
            raise
        except Exception as exc:  # noqa: BLE001 - the edited model may break recording: a result
            raise CandidateFailed(f"recording the changed model's inputs failed: {exc}") from None

    def confirm(
        self,
        c: Culprit,
        model: ModelSpec,
        probe: Mapping[str, Any],
        bound: int | None = None,
        budget: float | None = None,
    ) -> tuple[bool, str]:
        """The whole model measured again with another seed (other shapes, other inputs): a fix
        that only held for one schedule is not kept. budget: a fix kept for bringing the peak under
        it must do so again."""
        lab = self.derive(c, model, probe, bound)
        root = lab.stage(c.stage, seed=lab.options.seed + 1)
        if root.verdict is None:
            return False, f"{c.stage} {root.kind}"
        if budget is not None:
            again = project(root.curve.samples if root.curve is not None else (), self.lab.plan.dims)
            peak_again = again.peak_bytes if again is not None else None
            ok = peak_again is not None and peak_again <= budget
            return ok, f"peak {format_bytes(peak_again) if peak_again is not None else 'not measured'}"
        o = root.outcome()
        before, unit = growth(c.figures, c.kind)
        model_before = self.model_before(c)
        whole_before = growth(model_before, c.kind)[0] if model_before else before
        after = 0.0 if o.kind == CLEAN else growth(o.figures, c.kind)[0]
        ok = o.kind == CLEAN or after <= whole_before - KEEP_DROP * before + 1e-9
        ok = ok or bool(flat_past_bound(o.figures, c.kind, bound, model_before or c.figures))
        return ok, f"{_fmt(after, unit)}, {o.kind}"

    def model_before(self, c: Culprit) -> Mapping[str, Any]:
        """The whole model's figures in the culprit's stage before any fix (once per stage: every
        candidate of every culprit compares with them)."""
        if c.stage not in self._before:
            root = self.report.measure.stages[c.stage]
            ok = root.verdict is not None and root.curve is not None
            self._before[c.stage] = dict(root.outcome().figures) if ok else {}
        return self._before[c.stage]

    def evaluate(
        self,
        c: Culprit,
        fixers: tuple[str, ...],
        summary: str,
        probe: Mapping[str, Any],
        edits: tuple[Any, ...],
        changes_outputs: bool,
        size: int,
        removes_behaviour: str = "",
        bound: int | None = None,
    ) -> Evaluation:
        label = f"{'+'.join(fixers)} {c.region or '<root>'} {c.stage}"
        with self.lab.timings.phase("build", label):
            model = shadow_copy(self.lab.model, edits, self.shadow_root) if edits else self.lab.model
        base = dict(
            fixers=fixers,
            summary=summary,
            region=c.region,
            stage=c.stage,
            before={"kind": c.kind, **dict(c.figures)},
            changes_outputs=changes_outputs,
            size=size,
            edits=edits,
            probe=dict(probe),
            removes_behaviour=removes_behaviour,
            bound=bound,
        )
        first = self.region_first(c, model, probe, bound, label)
        if first is not None and first.kind not in (Kind.FAILED, Kind.CRASHED) and not region_flat(c, first, bound):
            # Dropped on the region alone: decide stops at "not flat enough" before the whole model.
            verdict = decide(c, first, first, {}, changes_outputs, self.allow_output_changes, lambda: {}, bound)
            return Evaluation(
                **base, after=_figures(first), after_model={}, **trade_off(self.model_before(c), {}), **verdict
            )
        if first is not None and first.kind in (Kind.FAILED, Kind.CRASHED):
            first = None  # measured again after the whole model, whose failure says why first
        try:
            region_outcome, model_outcome = self.measure(c, model, probe, bound, label, first)
        except CandidateFailed as exc:
            return Evaluation(
                **base,
                after={},
                after_model={},
                equivalent=None,
                max_abs_diff=None,
                max_rel_diff=None,
                kept=False,
                reason=f"dropped: {exc}",
            )
        budget = self.budget_of(c, model_outcome)
        peak_after = budget.get("peak_after_bytes")
        # Against a budget the question is the peak: a fix that brings it under is kept though the
        # growth that settles below it remains (the bounded growth is then expected behaviour).
        under = budget.get("budget_bytes") if peak_after is not None and peak_after <= budget["budget_bytes"] else None
        verdict = decide(
            c,
            region_outcome,
            model_outcome,
            self.model_before(c),
            changes_outputs,
            self.allow_output_changes,
            lambda: self.equivalence(c, model, probe, edits, label),
            bound,
            under_budget=under,
        )
        if verdict["kept"] and c.kind != UNSUPPORTED_OP:  # a stage that now runs: the outputs check covered the shapes
            with self.lab.timings.phase("confirm", label):
                held, how = self.confirm(c, model, probe, bound, under)
            if not held:
                verdict = {
                    **verdict,
                    "kept": False,
                    "reason": f"dropped: {verdict['reason'].split(': ', 1)[1]}, but not with another seed ({how})",
                }
        return Evaluation(
            **base,
            after=_figures(region_outcome),
            after_model=_figures(model_outcome),
            **trade_off(self.model_before(c), model_outcome.figures),
            **budget,
            **verdict,
        )

    def budget_of(self, c: Culprit, model_outcome: Outcome) -> dict[str, float | None]:
        """The budget a fix is judged against (only where the culprit's stage is over it) and the
        whole model's projected peak with the fix."""
        if self.budget is None:
            return {}
        dims = self.lab.plan.dims
        if not over_budget(stage_ceilings(self.report.measure.stages.get(c.stage), dims), self.budget):
            return {}
        after = project(model_outcome.figures.get("samples") or (), dims)
        return {"budget_bytes": self.budget, "peak_after_bytes": after.peak_bytes if after is not None else None}

    def equivalence(
        self, c: Culprit, model: ModelSpec, probe: Mapping[str, Any], edits: tuple[Any, ...], label: str = ""
    ) -> dict[str, Any]:
        mode = "eager" if (edits and c.stage == "eager") else "onnx"
        with self.lab.timings.phase("equivalence", label):
            return self.lab.outputs_against(
                self.lab.derive(model, probe),
                c.stage,
                mode,
                self.rtol,
                self.atol,
                label=f"outputs {c.region or '<root>'}",
            )

    # -- the run ----------------------------------------------------------------------------------------

    def repair_culprit(self, c: Culprit, pool: ThreadPoolExecutor) -> list[Evaluation]:

        target = self.target(c)
        candidates = [cand for fx in self.fixers if addresses(fx, target) for cand in fx.propose(target)]
        futures = [
            pool.submit(
                self.evaluate,
                c,
                (cand.fixer,),
                cand.summary,
                cand.probe,
                cand.edits,
                cand.changes_outputs,
                cand.size,
                cand.removes_behaviour,
                getattr(cand, "bound", None),  # a plugin's Candidate may predate the field
            )
            for cand in candidates
        ]
        results = [fut.result() for fut in futures]
        if not any(r.kept and r.after.get("kind") == CLEAN for r in results):
            # Nothing made it clean: pairs may do better than the best single candidate.
            results += self.combine(c, candidates, results, pool)
        return rank(results)

    def combine(
        self, c: Culprit, candidates: list[Any], results: list[Evaluation], pool: ThreadPoolExecutor
    ) -> list[Evaluation]:
        """When no candidate is enough alone: the two that helped most, each paired with every
        other candidate that ran (a setting that does nothing alone can finish another's job, as
        the memory pattern off does for a warm-up at the largest input)."""
        before, _ = growth(c.figures, c.kind)

        def remaining(r: Evaluation) -> float:
            return growth(r.after, c.kind)[0] if r.after.get("kind") != CLEAN else 0.0

        ran = [
            (r, cand)
            for r, cand in zip(results, candidates)
            if r.after.get("kind") not in (None, Kind.FAILED, Kind.CRASHED)
        ]
        helped = sorted((rc for rc in ran if remaining(rc[0]) < 0.8 * before), key=lambda rc: remaining(rc[0]))[:2]
        pairs: list[tuple[Any, Any]] = []
        for _, a in helped:
            for _, b in ran:
                if b is a or any({a.summary, b.summary} == {x.summary, y.summary} for x, y in pairs):
                    continue
                if any(e1.path == e2.path for e1 in a.edits for e2 in b.edits):
                    continue  # two edits of one file do not compose
                pairs.append((a, b))
        futures = [
            pool.submit(
                self.evaluate,
                c,
                (a.fixer, b.fixer),
                f"{a.summary}; and {b.summary}",
                merge_probe(a.probe, b.probe),
                a.edits + b.edits,
                a.changes_outputs or b.changes_outputs,
                a.size + b.size,
                "; ".join(x for x in (a.removes_behaviour, b.removes_behaviour) if x),
            )
            for a, b in pairs[:MAX_PAIRS]
        ]
        return [f.result() for f in futures]

    def run(self) -> FixReport:
        started = time.perf_counter()
        evaluations: list[Evaluation] = []
        with ThreadPoolExecutor(max_workers=max(2, self.lab.jobs * 2), thread_name_prefix="bisector-fix") as pool:
            for c in self.report.culprits:
                if self.only is not None and (c.region, c.stage, c.kind) not in self.only:
                    continue
                evaluations += self.repair_culprit(c, pool)
        probes = self.lab.probes - self.probes_before
        return FixReport(
            find=self.report,
            evaluations=tuple(evaluations),
            probes=probes,
            wall_s=time.perf_counter() - started,
            timings=self.lab.timings.snapshot(),
        )


class CandidateFailed(Exception):
    """The candidate could not be measured (the changed model does not build, run or export)."""


def region_flat(c: Culprit, region: Outcome, bound: int | None) -> bool:
    """decide's test of the region alone: clean, or its growth down by KEEP_DROP (past its bound
    for a bounded fix). A region that is not flat drops the candidate whatever the whole model does."""
    before, unit = growth(c.figures, c.kind)
    after = 0.0 if region.kind == CLEAN else growth(region.figures, c.kind)[0]
    region_before = region_total(c.figures, c.kind, unit, before)
    if region.kind == CLEAN or (before > 0 and after <= (1 - KEEP_DROP) * before + (region_before - before)):
        return True
    return bool(flat_past_bound(region.figures, c.kind, bound, c.figures))


def decide(
    c: Culprit,
    region: Outcome,
    whole: Outcome,
    whole_before: Mapping[str, Any],
    changes_outputs: bool,
    allow_output_changes: bool,
    equivalence: Callable[[], Mapping[str, Any]],
    bound: int | None = None,
    under_budget: float | None = None,
) -> dict[str, Any]:
    """Keep or drop, and why: the region flat (clean, or growth down by KEEP_DROP), the whole
    model down by the culprit's share, outputs equivalent (or changed by design and allowed).
    Outputs are compared only for a candidate that flattens the curve. A fix that declares a bound
    (a memo kept to N entries) is flat when growth stops past its first N calls or new shapes
    (flat_past_bound), even where the average over the whole range is not."""
    none = dict(equivalent=None, max_abs_diff=None, max_rel_diff=None)
    if region.kind in (Kind.FAILED, Kind.CRASHED):
        return dict(
            **none, kept=False, reason=f"dropped: probing {c.region or 'the model'} {region.kind}: {region.message}"
        )
    if c.kind == UNSUPPORTED_OP:
        # Nothing grew: the stage did not run. Kept when it runs now and its ONNX outputs match.
        eq = equivalence()
        change = f"{c.stage} failed -> {c.stage} runs ({whole.kind})"
        if eq.get("failed"):
            return dict(
                **none,
                kept=False,
                saved=0.0,
                reason=f"dropped: {change} but outputs could not be compared: {eq['failed']}",
            )
        diffs = dict(
            equivalent=bool(eq.get("equivalent")),
            max_abs_diff=eq.get("max_abs_diff"),
            max_rel_diff=eq.get("max_rel_diff"),
        )
        if not eq.get("equivalent"):
            return dict(
                **diffs, kept=False, saved=0.0, reason=f"dropped: {change} but outputs differ ({eq.get('why')})"
            )
        return dict(**diffs, kept=True, saved=1.0, reason=f"kept: {change}")
    before, unit = growth(c.figures, c.kind)
    unit = staged_unit(unit, c.stage)  # shown per export or per run where the stage says so
    after = 0.0 if region.kind == CLEAN else growth(region.figures, c.kind)[0]
    if under_budget is not None:
        # Judged against the budget (the stage's projected peak was over it): the peak, not the
        # slope, is the question, and this fix brings it under; the outputs must still match.
        change = f"{_fmt(before, unit)} -> {_fmt(after, unit)}, {region.kind}"
        change += f", peak under the budget {format_bytes(under_budget)}"
        return _kept_if_equivalent(equivalence, change, before - after, changes_outputs, allow_output_changes)
    # A region named for what it leaks beyond its children: probed alone it still shows the
    # children's share, so the bar is its own share gone from the region's total.
    region_before = region_total(c.figures, c.kind, unit, before)
    change = f"{_fmt(region_before, unit)} -> {_fmt(after, unit)}, {region.kind} after the fix"
    saved = region_before - after
    bounded = ""
    if not (region.kind == CLEAN or (before > 0 and after <= (1 - KEEP_DROP) * before + (region_before - before))):
        bounded = flat_past_bound(region.figures, c.kind, bound, c.figures)
        if not bounded:
            return dict(**none, kept=False, saved=saved, reason=f"dropped: not flat enough: {change}")
        change = f"{change}; {bounded}"
    whole_b = growth(whole_before, c.kind)[0] if whole_before else before
    whole_a = 0.0 if whole.kind == CLEAN else growth(whole.figures, c.kind)[0]
    whole_flat = whole.kind == CLEAN or whole_a <= whole_b - KEEP_DROP * before + 1e-9
    if not whole_flat and bounded:
        whole_flat = bool(flat_past_bound(whole.figures, c.kind, bound, whole_before or c.figures))
    if not whole_flat:
        return dict(
            **none,
            kept=False,
            saved=saved,
            reason=f"dropped: the region's growth falls ({change}) but the whole model still grows ({whole.kind})",
        )
    eq = equivalence()
    if eq.get("failed"):
        return dict(
            **none,
            kept=False,
            saved=saved,
            reason=f"dropped: flat ({change}) but outputs could not be compared: {eq['failed']}",
        )
    equivalent = bool(eq.get("equivalent"))
    diffs = dict(equivalent=equivalent, max_abs_diff=eq.get("max_abs_diff"), max_rel_diff=eq.get("max_rel_diff"))
    if not equivalent and changes_outputs and not allow_output_changes:
        return dict(
            **diffs,
            kept=False,
            saved=saved,
            reason=(
                f"not kept: flat ({change}) but changes outputs by design ({eq.get('why')}); pass "
                "--allow-output-changes to keep it"
            ),
        )
    if not equivalent and not changes_outputs:
        return dict(
            **diffs, kept=False, saved=saved, reason=f"dropped: flat ({change}) but outputs differ ({eq.get('why')})"
        )
    label = "kept (changes outputs, allowed)" if not equivalent else "kept"
    return dict(**diffs, kept=True, saved=saved, reason=f"{label}: {change}")


def _kept_if_equivalent(
    equivalence: Callable[[], Mapping[str, Any]],
    change: str,
    saved: float,
    changes_outputs: bool,
    allow_output_changes: bool,
) -> dict[str, Any]:
    """Kept when the outputs match (or change by design and that is allowed), as decide's last step."""
    eq = equivalence()
    if eq.get("failed"):
        return dict(
            equivalent=None,
            max_abs_diff=None,
            max_rel_diff=None,
            kept=False,
            saved=saved,
            reason=f"dropped: {change} but outputs could not be compared: {eq['failed']}",
        )
    equivalent = bool(eq.get("equivalent"))
    diffs = dict(equivalent=equivalent, max_abs_diff=eq.get("max_abs_diff"), max_rel_diff=eq.get("max_rel_diff"))
    if not equivalent and (not changes_outputs or not allow_output_changes):
        return dict(**diffs, kept=False, saved=saved, reason=f"dropped: {change} but outputs differ ({eq.get('why')})")
    label = "kept (changes outputs, allowed)" if not equivalent else "kept"
    return dict(**diffs, kept=True, saved=saved, reason=f"{label}: {change}")


def trade_off(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, float | None]:
    """What a fix costs up front (memory in place before the first measured call, a warm-up's
    arena) against what it saves: the whole model's largest RSS over the declared range without
    and with it, and the growth over the range it prevents."""

    def f(m: Mapping[str, Any], k: str) -> float | None:
        v = m.get(k)
        return None if v is None else float(v)

    b0, b1, a0, a1 = (
        f(before, "rss_before_loop"),
        f(before, "rss_peak"),
        f(after, "rss_before_loop"),
        f(after, "rss_peak"),
    )
    upfront = a0 - b0 if a0 is not None and b0 is not None else None
    prevented = (b1 - b0) - (a1 - a0) if None not in (a0, a1, b0, b1) else None  # type: ignore[operator]
    return {"upfront_bytes": upfront, "steady_before_bytes": b1, "steady_after_bytes": a1, "prevented_bytes": prevented}


UPFRONT_FLOOR = 5e6  # below the RSS noise band an upfront cost is not a cost worth weighing


def costs_more_than_it_saves(e: Any) -> bool:
    """A fix that holds more from the start than the growth it prevents over the declared range
    (a warm-up's arena at the largest input, for a model that rarely sees it): not chosen by default.
    Judged against a budget (the culprit's peak was over it): a fix that leaves the peak over it."""
    headroom = getattr(e, "headroom_bytes", None)
    if headroom is not None:
        return headroom < 0
    up = getattr(e, "upfront_bytes", None)
    prevented = getattr(e, "prevented_bytes", None)
    return up is not None and prevented is not None and up > UPFRONT_FLOOR and up > prevented


merge_probe = merge_overrides  # kept fixes' probe options, merged as a probe merges them


def rank(results: list[Evaluation]) -> list[Evaluation]:
    """Kept first: those that keep the code's behaviour before those that remove some (data other
    code reads), those worth their upfront memory (or, against a budget, that bring the peak under
    it) before those that are not, then by how far under the budget, by memory saved, then by the
    smallest change; then the rest as tried."""
    kept = sorted(
        (r for r in results if r.kept),
        key=lambda r: (
            bool(r.removes_behaviour),
            costs_more_than_it_saves(r),
            -(r.headroom_bytes or 0.0),
            -r.saved,
            r.size,
        ),
    )
    return kept + [r for r in results if not r.kept]


def runtime_opset() -> int | None:
    """The newest ai.onnx opset the installed ONNX Runtime runs (its release notes' table)."""

    version = toolchain_versions()["onnxruntime"]
    if not version:
        return None
    major, minor = (int(x) for x in version.split(".")[:2])
    table = [((1, 22), 23), ((1, 20), 21), ((1, 18), 21), ((1, 17), 20), ((1, 15), 19), ((1, 14), 18)]
    for (ma, mi), opset in table:
        if (major, minor) >= (ma, mi):
            return opset
    return 17
