"""The fix engine for one model: fixers propose, probes re-measure, outputs are compared, and only
what flattens the curve is kept.

For each culprit of a find run and each candidate a fixer proposes (fix/candidates.py):
1. apply it: merged probe options (export, runtime, inputs) and/or a shadow copy of the user's
   files with the edits (fix/sources.py; the originals are never touched here);
2. re-measure the whole model in the culprit's stage against its control, then the culprit region
   alone (with inputs recorded from the edited model);
3. compare outputs with the original's on the schedule's inputs (max absolute and relative
   difference);
4. keep it (fix/decide.py) when the region's verdict becomes clean or its growth drops by at least
   90%, the whole model's growth drops by the culprit's share, outputs are equivalent within
   tolerance, and the whole model still passes measured again with another seed (that measurement
   starts beside the outputs' probe, once the curve is flat). A candidate that changes outputs by
   design (padding) is kept only with ``allow_output_changes``.
Kept fixes are ranked by memory saved, then by how small the change is (judge/choice.py); when no
candidate makes the culprit clean, pairs of the ones that helped most with every other are tried
together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from bisector.common.contract import toolchain_versions
from bisector.common.units import format_bytes
from bisector.find.localise import Culprit, FindReport
from bisector.fix.candidates import Trial, any_clean, pairs, proposed
from bisector.fix.decide import NO_DIFFS, decide, region_flat, trade_off
from bisector.fix.evaluation import Evaluation, FixReport
from bisector.fix.growth import KEEP_DROP, flat_past_bound, fmt_rate, growth, warm_calls
from bisector.fix.sources import shadow_copy, user_sources
from bisector.fixers import FixTarget, all_fixers, select
from bisector.fixers.base import UNSUPPORTED_OP  # stdlib only: a stage the exporter could not get through
from bisector.judge.ceiling import over_budget, project, stage_ceilings
from bisector.judge.choice import rank
from bisector.judge.search import Outcome
from bisector.judge.verdict import CLEAN
from bisector.lab.results import StageResult
from bisector.lab.stage import Interrupted, Lab
from bisector.model.choices import choose_exporter, exporter_in_message
from bisector.model.kinds import Kind
from bisector.model.spec import ModelSpec


def _failed_exporter(root: StageResult | None) -> str | None:
    """The exporter a failed stage used, from its message ("... with the torchscript exporter
    failed"): a failed stage has no curve to say it."""

    message = getattr(getattr(root, "failure", None), "message", "") or ""
    return exporter_in_message(message)


def _figures(o: Outcome) -> dict[str, Any]:
    return {"kind": o.kind, **dict(o.figures), "message": o.message}


class FixEngine:
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
            raise ValueError("the fix engine needs a lab that keeps a run directory (its candidates' copies go there)")
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
        return ok, f"{fmt_rate(after, unit)}, {o.kind}"

    def model_before(self, c: Culprit) -> Mapping[str, Any]:
        """The whole model's figures in the culprit's stage before any fix (once per stage: every
        candidate of every culprit compares with them)."""
        if c.stage not in self._before:
            root = self.report.measure.stages[c.stage]
            ok = root.verdict is not None and root.curve is not None
            self._before[c.stage] = dict(root.outcome().figures) if ok else {}
        return self._before[c.stage]

    def evaluate(self, c: Culprit, trial: Trial) -> Evaluation:
        """One candidate measured for a culprit and kept or dropped: its region first where that
        alone can drop it, else the whole model and the region, then its outputs and another seed."""
        label = f"{'+'.join(trial.fixers)} {c.region or '<root>'} {c.stage}"
        with self.lab.timings.phase("build", label):
            model = shadow_copy(self.lab.model, trial.edits, self.shadow_root) if trial.edits else self.lab.model
        base = dict(
            fixers=trial.fixers,
            summary=trial.summary,
            region=c.region,
            stage=c.stage,
            before={"kind": c.kind, **dict(c.figures)},
            changes_outputs=trial.changes_outputs,
            size=trial.size,
            edits=trial.edits,
            probe=dict(trial.probe),
            removes_behaviour=trial.removes_behaviour,
            bound=trial.bound,
        )
        first = self.region_first(c, model, trial.probe, trial.bound, label)
        if first is not None and first.kind in (Kind.FAILED, Kind.CRASHED):
            first = None  # measured again after the whole model, whose failure says why first
        elif first is not None and not region_flat(c, first, trial.bound):
            # Dropped on the region alone: decide stops at "not flat enough" before the whole model.
            verdict = decide(
                c, first, first, {}, trial.changes_outputs, self.allow_output_changes, lambda: {}, trial.bound
            )
            return Evaluation(
                **base, after=_figures(first), after_model={}, **trade_off(self.model_before(c), {}), **verdict
            )
        try:
            region_outcome, model_outcome = self.measure(c, model, trial.probe, trial.bound, label, first)
        except CandidateFailed as exc:
            return Evaluation(**base, after={}, after_model={}, **NO_DIFFS, kept=False, reason=f"dropped: {exc}")
        budget = self.budget_of(c, model_outcome)
        return Evaluation(
            **base,
            after=_figures(region_outcome),
            after_model=_figures(model_outcome),
            **trade_off(self.model_before(c), model_outcome.figures),
            **budget,
            **self.judged(c, trial, model, label, (region_outcome, model_outcome), budget),
        )

    def judged(
        self,
        c: Culprit,
        trial: Trial,
        model: ModelSpec,
        label: str,
        outcomes: tuple[Outcome, Outcome],
        budget: Mapping[str, float | None],
    ) -> dict[str, Any]:
        """decide's verdict on a measured candidate (region, whole model), confirmed with another seed
        when kept."""
        region_outcome, model_outcome = outcomes
        peak_after = budget.get("peak_after_bytes")
        # Against a budget the question is the peak: a fix that brings it under is kept though the
        # growth that settles below it remains (the bounded growth is then expected behaviour).
        under = budget.get("budget_bytes") if peak_after is not None and peak_after <= budget["budget_bytes"] else None
        confirm = _Confirmation(lambda: self.confirm(c, model, trial.probe, trial.bound, under), self.lab, label)
        # decide compares outputs only for a candidate that flattened the curve: the confirmation
        # with another seed starts then too, beside the outputs' probe, unless the outputs are
        # expected to differ (a fix that changes them by design, not allowed) or no seed is asked.
        speculate = c.kind != UNSUPPORTED_OP and not (trial.changes_outputs and not self.allow_output_changes)

        def equivalence() -> Mapping[str, Any]:
            # The confirmation starts once the outputs' probe is queued: its probes, which may be
            # many (a traced export pair), queue behind it, not ahead (symbolic_leak's outputs waited
            # 17 s for them when both started at once).
            return self.equivalence(c, model, trial.probe, trial.edits, label, confirm.start if speculate else None)

        verdict = decide(
            c,
            region_outcome,
            model_outcome,
            self.model_before(c),
            trial.changes_outputs,
            self.allow_output_changes,
            equivalence,
            trial.bound,
            under_budget=under,
        )
        if verdict["kept"] and c.kind != UNSUPPORTED_OP:  # a stage that now runs: the outputs check covered the shapes
            held, how = confirm.result()
            if not held:
                verdict = {
                    **verdict,
                    "kept": False,
                    "reason": f"dropped: {verdict['reason'].split(': ', 1)[1]}, but not with another seed ({how})",
                }
        else:
            confirm.wait()  # started for a candidate whose outputs then differed: nothing runs on after it
        return verdict

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
        self,
        c: Culprit,
        model: ModelSpec,
        probe: Mapping[str, Any],
        edits: tuple[Any, ...],
        label: str = "",
        queued: Callable[[], None] | None = None,
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
                queued=queued,
            )

    # -- the run ----------------------------------------------------------------------------------------

    def fix_culprit(self, c: Culprit, pool: ThreadPoolExecutor) -> list[Evaluation]:
        """Every candidate for one culprit, measured in parallel; pairs when none made it clean."""
        candidates = proposed(self.fixers, self.target(c))
        futures = [pool.submit(self.evaluate, c, Trial.of(cand)) for cand in candidates]
        results = [fut.result() for fut in futures]
        if not any_clean(results):
            # Nothing made it clean: pairs may do better than the best single candidate.
            results += self.combine(c, candidates, results, pool)
        return rank(results)

    def combine(
        self, c: Culprit, candidates: list[Any], results: list[Evaluation], pool: ThreadPoolExecutor
    ) -> list[Evaluation]:
        """When no candidate is enough alone: the two that helped most, each paired with every
        other candidate that ran (candidates.pairs)."""
        before, _ = growth(c.figures, c.kind)

        def remaining(r: Evaluation) -> float:
            return growth(r.after, c.kind)[0] if r.after.get("kind") != CLEAN else 0.0

        futures = [
            pool.submit(self.evaluate, c, Trial.pair(a, b)) for a, b in pairs(before, candidates, results, remaining)
        ]
        return [f.result() for f in futures]

    def run(self) -> FixReport:
        started = time.perf_counter()
        evaluations: list[Evaluation] = []
        with ThreadPoolExecutor(max_workers=max(2, self.lab.jobs * 2), thread_name_prefix="bisector-fix") as pool:
            for c in self.report.culprits:
                if self.only is not None and (c.region, c.stage, c.kind) not in self.only:
                    continue
                evaluations += self.fix_culprit(c, pool)
        probes = self.lab.probes - self.probes_before
        return FixReport(
            find=self.report,
            evaluations=tuple(evaluations),
            probes=probes,
            wall_s=time.perf_counter() - started,
            timings=self.lab.timings.snapshot(),
        )


class _Confirmation:
    """A candidate's confirmation with another seed (FixEngine.confirm), run in its own thread from
    start() on, beside the outputs' probe, or here when result() is asked first."""

    def __init__(self, run: Callable[[], tuple[bool, str]], lab: Lab, label: str) -> None:
        self._run, self._lab, self._label = run, lab, label
        self._future: Future[tuple[bool, str]] | None = None

    def _timed(self) -> tuple[bool, str]:
        with self._lab.timings.phase("confirm", self._label):
            return self._run()

    def start(self) -> None:
        if self._future is None:
            self._future = Future()
            threading.Thread(target=self._into, name="bisector-confirm", daemon=True).start()

    def _into(self) -> None:
        assert self._future is not None
        try:
            self._future.set_result(self._timed())
        except BaseException as exc:  # noqa: BLE001 - raised again where result() is asked
            self._future.set_exception(exc)

    def result(self) -> tuple[bool, str]:
        return self._timed() if self._future is None else self._future.result()

    def wait(self) -> None:
        """For a confirmation nobody reads: it ends before the candidate's evaluation does."""
        if self._future is not None:
            try:
                self._future.result()
            except Interrupted:
                raise
            except Exception:  # noqa: BLE001 - its figures are not used
                pass


class CandidateFailed(Exception):
    """The candidate could not be measured (the changed model does not build, run or export)."""


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
