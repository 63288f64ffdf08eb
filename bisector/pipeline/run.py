"""The one find -> fix path: find, the failure policy, the fix engine, patches, optional apply, confirm.

The CLI, the API, batch repair, the e2e tests and bench/fix_zoo.py all call ``fix``; each renders
the typed ``FixOutcome`` its own way. The status says what happened to the model:

- clean: nothing of the model's grows that the policy fails on (what the toolchain keeps, and by
  default bounded shape-growth within the budget, are reported with their ceiling, not counted);
- fixed: every culprit has a kept fix in the patch (or in the runtime settings);
- unfixed: a culprit has no kept fix, a written fix did not hold, or growth has no culprit named;
- unproven: a stage could not be judged (inconclusive, or its probe crashed or timed out);
- error: the model could not be measured at all (the message says why).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bisector.common.errors import UserError
from bisector.common.project import project_root
from bisector.common.strenum import StrEnum
from bisector.find.localise import Culprit, Finder, FindReport
from bisector.fix.engine import FixEngine
from bisector.fix.evaluation import FixReport
from bisector.fix.growth import holds
from bisector.fix.unfixable import NotFixable, not_fixable
from bisector.fixers import all_fixers, names
from bisector.judge.ceiling import peak, project, stage_ceilings
from bisector.judge.choice import best_fixes, not_chosen
from bisector.judge.fail_on import FailOn
from bisector.judge.verdict import CLEAN, INCONCLUSIVE, LEAK, SHAPE_GROWTH, TOOLCHAIN_LEAK
from bisector.lab.results import CRASHED, FAILED, MeasureReport
from bisector.lab.runner import Events
from bisector.lab.stage import RUN_DIR, Lab
from bisector.lab.timings import PhaseTimes, Stopwatch
from bisector.patching.apply import check_writable
from bisector.pipeline.failures import failure_culprits, failure_error, stage_errors, unexported, unfixable_failures
from bisector.pipeline.patches import ProjectCheck, apply_and_check, proven_patches
from bisector.pipeline.prepare import Options, Prepared
from bisector.probe.pool import ProbePool
from bisector.store.outputs import check_output_dir


class Status(StrEnum):
    CLEAN = "clean"
    FIXED = "fixed"
    UNFIXED = "unfixed"
    UNPROVEN = "unproven"
    ERROR = "error"


@dataclass(frozen=True)
class FixRequest:
    """What fix does beyond measuring: which fixers, which fix per culprit, what to patch and write."""

    fixers: tuple[str, ...] = ()
    allow_output_changes: bool = False
    pick: int | None = None  # the N-th kept fix of each culprit instead of the default choice
    prefer: str | None = None  # a fixer to choose first when it is kept
    patch: bool = True  # compose patches of the user's files (batch composes over models itself)
    apply: bool = False
    force: bool = False  # with apply: also replace read-only files
    # A stage that crashed or timed out ends the run as an error (a migration summary cannot call a
    # model it never measured anything else); otherwise it is "unproven" and the rest is fixed.
    unmeasured_is_error: bool = False
    fail_on: FailOn = FailOn()  # which culprits must be fixed for the run to pass
    # `fix` on one model tries fixes for every culprit; `repair` over a project only for those its
    # policy fails on: bounded growth within the budget costs ~17 probes of fixes nobody asked for,
    # and a toolchain workaround (export in a child process) rewrites the export script for growth
    # torch.fx keeps on nearly any model (~60 KB per dynamo export).
    only_failing: bool = False


@dataclass
class FixCallbacks:
    """What a front end learns while fix runs: where finished work is kept (to say so when stopped),
    the find report as soon as it is ready, and the files --apply has written so far."""

    events: Events | None = None
    on_run_dir: Callable[[str], None] | None = None
    on_found: Callable[[FindReport], None] | None = None
    written: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FixOutcome:
    status: Status
    found: FindReport | None = None
    report: FixReport | None = None
    chosen: tuple[Any, ...] = ()  # the kept fix chosen for each culprit, in culprit order
    patches: tuple[Any, ...] = ()
    notes: tuple[str, ...] = ()
    check: str = "no patch"  # the project's check command on the patched files: passed | failed: ... | ...
    applied: tuple[str, ...] = ()
    check_after_apply: str = ""
    confirmed: MeasureReport | None = None
    backups: str = ""
    # Stages that could not run, each with its one-line error (failures.stage_errors): reported
    # beside the status of the stages that ran, which the status is.
    stage_errors: Mapping[str, str] = field(default_factory=dict)
    not_fixable: tuple[NotFixable, ...] = ()  # culprits no bound can fix without changing the outputs
    # The check command's and the confirmation's spans (find's and the fix engine's are the report's).
    timings: PhaseTimes = PhaseTimes()

    @property
    def phase_times(self) -> PhaseTimes:
        """Every phase of the run: find, the fix engine, the check command, the confirmation."""
        return (self.report.timings if self.report is not None else PhaseTimes()).plus(self.timings)

    def status_text(self) -> str:
        """The status, and each stage that could not run: "fixed (export: error ...)"."""
        return with_stage_errors(self.status.value, self.stage_errors)

    def to_json(self) -> dict[str, Any]:
        data = self.report.to_json() if self.report is not None else {}
        data["patches"] = [{"path": p.rel, "summary": p.summary, "diff": p.diff} for p in self.patches if p.changed]
        data["patch_notes"] = list(self.notes)
        data["check"] = self.check
        if self.report is not None:
            data["timings"] = self.phase_times.to_json()
        if self.backups:  # --apply ran (and wrote these, possibly nothing)
            data["applied"] = list(self.applied)
        if self.check_after_apply:
            data["check_after_apply"] = self.check_after_apply
        if self.stage_errors:
            data["stage_errors"] = dict(self.stage_errors)
        if self.not_fixable:
            data["not_fixable"] = [nf.to_json() for nf in self.not_fixable]
        if self.confirmed is not None:
            data["confirmed"] = {
                "verdict": self.confirmed.verdict,
                "stages": {s: r.to_json(samples=False) for s, r in self.confirmed.stages.items()},
            }
        return data


def with_stage_errors(status: str, errors: Mapping[str, str]) -> str:
    """A status with the stages that could not run: "fixed (export: error ...)"."""
    if not errors:
        return status
    return f"{status} ({'; '.join(f'{s}: {why}' for s, why in errors.items())})"


def without_errors(found: FindReport, errors: Mapping[str, str]) -> FindReport:
    """The find without the stages that could not run (errors, failures.stage_errors): each is
    reported as its own error, not as the model's status."""
    if not errors:
        return found
    stages = {s: r for s, r in found.measure.stages.items() if s not in errors}
    searches = {s: r for s, r in found.searches.items() if s not in errors}
    return replace(found, measure=replace(found.measure, stages=stages), searches=searches)


def stage_peaks(report: MeasureReport) -> dict[str, float]:
    """The projected RSS peak at the largest declared input of each stage whose growth settles
    (bounded shape-growth): what `--budget` judges."""
    dims = getattr(getattr(report, "plan", None), "dims", None) or {}
    out = {}
    for stage, r in report.stages.items():
        p = peak(stage_ceilings(r, dims))
        if p is not None:
            out[stage] = p
    return out


def under_budget(stage: Any, dims: Mapping[str, Any], fail_on: FailOn) -> bool:
    """A stage measured again whose projected peak is now under the budget (a fix kept for that)."""
    curve = getattr(stage, "curve", None)
    if fail_on.budget is None or curve is None:
        return False
    found = project(curve.samples, dims)
    return found is not None and found.peak_bytes <= fail_on.budget


def measured_status(report: MeasureReport, fail_on: FailOn = FailOn()) -> Status:
    """A measurement's status: growth the model owns that the policy fails on, a failure, or not
    proven either way. Growth the policy accepts (by default, what the toolchain keeps, and bounded
    shape-growth whose peak fits the budget) is clean."""
    kinds = set()
    peaks = stage_peaks(report)
    for stage, r in report.stages.items():
        bounded = getattr(getattr(r, "verdict", None), "bounded", None)
        if r.kind in (LEAK, SHAPE_GROWTH, TOOLCHAIN_LEAK, INCONCLUSIVE) and fail_on.fails(
            r.kind, bounded, peaks.get(stage)
        ):
            return Status.UNFIXED
        kinds.add(CLEAN if r.kind in (LEAK, SHAPE_GROWTH, TOOLCHAIN_LEAK) else r.kind)
    if FAILED in kinds:
        return Status.ERROR
    if kinds & {INCONCLUSIVE, CRASHED}:
        return Status.UNPROVEN
    return Status.CLEAN if kinds <= {CLEAN} else Status.UNPROVEN


def failing(culprits: Iterable[Culprit], fail_on: FailOn, peaks: Mapping[str, float] | None = None) -> list[Culprit]:
    """The culprits that fail the run: growth the policy lists (or whose stage's projected peak is
    over the budget: peaks, by stage), and stages that could not export."""
    growth = (LEAK, SHAPE_GROWTH, TOOLCHAIN_LEAK)
    peaks = peaks or {}
    return [
        c
        for c in culprits
        if c.kind not in growth or fail_on.fails(c.kind, c.figures.get("bounded"), peaks.get(c.stage))
    ]


def find_status(report: FindReport, fail_on: FailOn = FailOn()) -> Status:
    """A find's status: a failing culprit named, else the measurement's (a search cut short proves
    nothing clean)."""
    if failing(report.culprits, fail_on, stage_peaks(report.measure)):
        return Status.UNFIXED
    status = measured_status(report.measure, fail_on)
    return Status.UNPROVEN if status == Status.CLEAN and not report.complete else status


def find(
    prepared: Prepared, callbacks: FixCallbacks | None = None, pool: ProbePool | None = None, executor: Any = None
) -> tuple[Lab, FindReport]:
    """Find on a new lab (left open: the fix engine derives from it); failed exports become culprits."""
    callbacks = callbacks or FixCallbacks()
    given = prepared.given or Options()
    lab = Lab(
        prepared.model, prepared.plan, prepared.options, callbacks.events, given.run_dir, pool=pool, executor=executor
    )
    if callbacks.on_run_dir is not None and lab.run is not None:
        callbacks.on_run_dir(str(lab.run.parent.parent))
    try:
        return lab, failure_culprits(Finder(lab).find())
    except BaseException:
        lab.close()
        raise


def check_request(prepared_spec: str, given: Options, request: FixRequest, known_fixers: Iterable[str]) -> Path:
    """Refuse, before minutes of probing, what fix could not do: unknown fixers, a bad --pick, and
    files --apply would have to write outside the project or read-only without --force. Returns the
    project root (decided from the model path as given, before any symlink is followed: a link
    inside the project to a file outside it must not carry the writes outside)."""

    known = list(known_fixers)
    for name in request.fixers:
        if name not in known:
            raise UserError(f"unknown fixer {name!r}; see `bisector fixers` ({', '.join(known)})")
    if request.pick is not None and request.pick < 1:
        raise UserError("--pick counts kept fixes from 1")
    for script, flag in ((given.export_script, "--export-script"), (given.infer_script, "--infer-script")):
        if script and not Path(script).is_file():
            raise UserError(f"{flag} {script} does not exist")
    model_file = given_path(prepared_spec)
    root = project_root(model_file)
    check_output_dir(given.run_dir or Path.cwd() / RUN_DIR, "--run-dir")
    if request.apply:
        # The backups go to <root>/.bisector/backups: a .bisector linked out of the project would
        # carry them (and the run) outside. Refused now, not once every probe has run.
        backups = root / RUN_DIR / "backups"
        check_writable(backups, root, "the backups folder")
        check_output_dir(backups, "the backups folder")
        for path, what in (
            (model_file, "the model file"),
            (given.export_script, "--export-script"),
            (given.infer_script, "--infer-script"),
        ):
            if path:
                check_writable(path, root, what, force=request.force)
    return root


def known_fixers() -> list[str]:
    """What `--fixer` (and api.fix's fixers=) accept: each fixer's name, then each family's
    (python-leaks selects its members)."""
    return names(all_fixers())


def given_path(spec: str) -> Path:
    """The model file as the user wrote it, made absolute without following symlinks."""

    return Path(os.path.abspath(Path(spec.rpartition(":")[0] or spec).expanduser()))


def fix(
    prepared: Prepared,
    request: FixRequest = FixRequest(),
    callbacks: FixCallbacks | None = None,
    *,
    root: Path | None = None,
    pool: ProbePool | None = None,
    executor: Any = None,
    stopped: Callable[[], bool] = lambda: False,
) -> FixOutcome:
    """find -> failure policy -> fix engine -> patches -> (apply -> check -> confirm). Raises the user
    error of a stage that could not run (exit 2 in the CLI); KeyboardInterrupt when stopped."""
    callbacks = callbacks or FixCallbacks()
    lab, found = find(prepared, callbacks, pool, executor)
    try:
        if lab.interrupted.is_set():
            raise KeyboardInterrupt  # stopped: no fixes tried, and above all no --apply
        # A stage that cannot run is that stage's error: the others are still found and fixed.
        # Only a model none of whose stages could be measured is an error as a whole.
        errors = stage_errors(found, crashed=request.unmeasured_is_error)
        error = failure_error(found.measure, skip={c.stage for c in found.culprits} | set(errors))
        if error is not None:
            raise error
        if request.unmeasured_is_error:
            unmeasured = [u for u in unfixable_failures(found) if u.split(":", 1)[0] not in errors]
            if unmeasured:
                raise UserError("; ".join(unmeasured))
        if callbacks.on_found is not None:
            callbacks.on_found(found)
        report = FixEngine(
            lab,
            found,
            allow_output_changes=request.allow_output_changes,
            only=request.fixers,
            budget=request.fail_on.budget,
            culprits=failing(found.culprits, request.fail_on, stage_peaks(found.measure))
            if request.only_failing
            else None,
        ).run()
        if not lab.interrupted.is_set():
            lab.release_captures()  # every candidate is measured: the regions' inputs are needed no more
    finally:
        lab.close()
    # A stage no fix made export is that stage's error too, once the fixers have had their try.
    errors = {**errors, **unexported(found, lambda c: any(e.kept for e in report.for_culprit(c)))}
    outcome = _patch_and_apply(prepared, request, callbacks, found, report, root, stopped, errors)
    return replace(outcome, stage_errors=errors) if errors else outcome


def _patch_and_apply(
    prepared: Prepared,
    request: FixRequest,
    callbacks: FixCallbacks,
    found: FindReport,
    report: FixReport,
    root: Path | None,
    stopped: Callable[[], bool],
    errors: Mapping[str, str],
) -> FixOutcome:
    """The chosen fixes, the status, then (as asked) the patches proven on the project, and
    --apply: written, checked and measured again."""
    chosen = tuple(best_fixes(report, request.pick, request.prefer))
    notes, unfixable = _choice_notes(found, report, chosen)
    judged = without_errors(found, errors)  # the stages that ran: what the status and the re-measure judge
    status = _status(judged, report, chosen, request.fail_on)
    if not request.patch:
        return FixOutcome(status, found, report, chosen, notes=tuple(notes), not_fixable=unfixable)
    root = root or project_root(Path(prepared.model.path))
    watch = Stopwatch()
    patches, notes, check, check_state = proven_patches(report, root, prepared, request, notes, watch)
    outcome = FixOutcome(
        status, found, report, chosen, tuple(patches), tuple(notes), check_state, not_fixable=unfixable
    )
    if not request.apply:
        return replace(outcome, timings=watch.snapshot())
    if stopped():
        raise KeyboardInterrupt
    return _apply(prepared, request, callbacks, outcome, judged, root, check, watch)


def _choice_notes(
    found: FindReport, report: FixReport, chosen: tuple[Any, ...]
) -> tuple[list[str], tuple[NotFixable, ...]]:
    """Notes for culprits with a kept fix none of which was chosen, and the culprits no bound can
    fix without changing the outputs (weights grown in forward): said as such, with what to
    change, rather than a bare "no kept fix"."""
    picked = {(e.region, e.stage) for e in chosen}
    notes: list[str] = []
    for c in found.culprits:
        if report.fixed(c) and (c.region, c.stage) not in picked:
            why = not_chosen([e for e in report.for_culprit(c) if e.kept])
            notes.append(
                f"{c.region or '<root>'} ({c.stage}): {why}, so none is in the patch; "
                "take one with --pick N or --prefer NAME"
            )
    unfixable = tuple(nf for c in found.culprits if not report.fixed(c) for nf in [not_fixable(c)] if nf is not None)
    return notes + [nf.note() for nf in unfixable], unfixable


def _apply(
    prepared: Prepared,
    request: FixRequest,
    callbacks: FixCallbacks,
    outcome: FixOutcome,
    judged: FindReport,
    root: Path,
    check: ProjectCheck,
    watch: Stopwatch,
) -> FixOutcome:
    """--apply (apply_and_check), and the status once written: unfixed when the project's check
    fails with what was written, or when a culprit's stage measured again still grows."""
    done = apply_and_check(prepared, request.force, outcome, judged, root, check, watch, callbacks.written)
    status = outcome.status
    if done.check_after.startswith("failed"):
        status = Status.UNFIXED  # the project's own check fails with what was written: never "clean"
    elif done.confirmed is not None and not all(
        holds(c, done.confirmed.stages.get(c.stage))
        or under_budget(done.confirmed.stages.get(c.stage), prepared.plan.dims, request.fail_on)
        for c in failing(judged.culprits, request.fail_on, stage_peaks(judged.measure))
    ):
        status = Status.UNFIXED  # the written fix did not hold on a fresh measurement
    return replace(
        outcome,
        status=status,
        applied=tuple(done.written),
        check_after_apply=done.check_after,
        confirmed=done.confirmed,
        backups=done.backups,
        timings=watch.snapshot(),
    )


def _status(found: FindReport, report: FixReport, chosen: tuple[Any, ...], fail_on: FailOn) -> Status:
    culprits = failing(found.culprits, fail_on, stage_peaks(found.measure))
    if not culprits:
        status = measured_status(found.measure, fail_on)
        if found.culprits and status == Status.UNFIXED:
            status = Status.CLEAN  # growth was found, but none the policy fails on
        if status == Status.CLEAN and chosen:
            return Status.FIXED  # growth the policy accepts (bounded, within budget), fixed as asked (prefer/pick)
        return status
    picked = {(e.region, e.stage) for e in chosen}
    if all(report.fixed(c) and (c.region, c.stage) in picked for c in culprits):
        return Status.FIXED
    return Status.UNFIXED
