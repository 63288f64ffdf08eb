"""What fix does with the chosen fixes once they are known: patches proven on the project (they
compile, and the project's check command passes with them), and --apply: the patches written, the
check run on the files as written, and the culprits' stages measured again from them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bisector.find.localise import FindReport
from bisector.fix.candidates import merge_probe
from bisector.fix.evaluation import FixReport
from bisector.fix.project_check import CHECK_TIMEOUT_S, prove, run_check
from bisector.judge.verdict import LEAK
from bisector.lab.measure import measure
from bisector.lab.results import MeasureReport
from bisector.lab.timings import Stopwatch
from bisector.model.schedule import warmed
from bisector.options.config import load_config
from bisector.patching.apply import apply as apply_patches
from bisector.pipeline.prepare import Options, Prepared


@dataclass(frozen=True)
class ProjectCheck:
    """The project's check command ([tool.bisector] check) and its timeout."""

    command: str | None
    timeout: float

    @classmethod
    def of(cls, prepared: Prepared, given: Options) -> ProjectCheck:
        project_cfg = load_config(prepared.model.path, given.config)
        check = project_cfg.get("check")
        return cls(
            check if isinstance(check, str) else None, float(project_cfg.get("check_timeout") or CHECK_TIMEOUT_S)
        )


def proven_patches(
    report: FixReport,
    root: Path,
    prepared: Prepared,
    request: Any,
    notes: list[str],
    watch: Stopwatch,
) -> tuple[list[Any], list[str], ProjectCheck, str]:
    """The chosen fixes' patches, proven on the project: the patched files compile, and the
    project's check command runs with them in a shadow copy; a failing patch is not offered.
    request: the FixRequest (its pick and prefer). Returns the patches, the notes (the patches'
    first), the check and its state."""
    # The patch writers bring libcst (~0.4 s), which a run that patches nothing never needs.
    from bisector.patching.from_report import patches_for  # noqa: PLC0415

    given = prepared.given or Options()
    patches, patch_notes = patches_for(
        report,
        root,
        given.export_script,
        given.infer_script,
        key=given.artifact,
        pick=request.pick,
        prefer=request.prefer,
    )
    notes = list(patch_notes) + notes
    check = ProjectCheck.of(prepared, given)
    check_state = "no patch"
    if patches:
        with watch.phase("check", "patches"):
            offered, check_state = prove(root, check.command, patches, check.timeout)
        if not offered:
            notes.append(f"the patch is not offered: {check_state}")
            patches = []
    return patches, notes, check, check_state


@dataclass(frozen=True)
class Applied:
    """What --apply did: the files written, the backups' folder, the project's check on the files
    as written ("" when not run), and the culprits' stages measured again from them."""

    written: list[str]
    backups: str
    check_after: str = ""
    confirmed: MeasureReport | None = None


def apply_and_check(
    prepared: Prepared,
    force: bool,
    outcome: Any,
    found: FindReport,
    root: Path,
    check: ProjectCheck,
    watch: Stopwatch,
    written_so_far: list[str],
) -> Applied:
    """The outcome's patches written (with backups; written_so_far grows as each file is, for a
    front end stopped half way), the project's check run on them, and confirm()."""
    backups = str(root / ".bisector" / "backups")
    written = apply_patches(list(outcome.patches), root, force=force, written=written_so_far)
    check_after = ""
    if written and check.command:
        with watch.phase("check", "as written"):
            ok, why = run_check(root, check.command, [], check.timeout)  # the project as now written, in a shadow copy
        check_after = "passed" if ok else f"failed: {why}"
    confirmed = None
    if written:
        with watch.phase("confirm", "as written"):
            confirmed = confirm(prepared, found, outcome.chosen)
    return Applied(written, backups, check_after, confirmed)


def confirm(prepared: Prepared, found: FindReport, chosen: Iterable[Any]) -> MeasureReport:
    """Re-measure the stages that had culprits from the files as now written (the probe loads the
    model source afresh, so source edits count), with the chosen fixes' export and runtime settings
    as probe overrides (the probe does not run the user's export or serving scripts)."""

    chosen = list(chosen)
    probes: dict[str, Any] = {}
    for ev in chosen:
        probes = merge_probe(probes, ev.probe)
    stages = tuple(dict.fromkeys(c.stage for c in found.culprits))
    options = replace(prepared.options, stages=stages, probe=prepared.options.probe.with_overrides(probes))
    # A fix bounding a per-call container is judged full, as when it was kept (fix/growth.warm_calls).
    calls = max((int(ev.bound) for ev in chosen if ev.bound and (ev.before or {}).get("kind") == LEAK), default=0)
    if calls:
        options = replace(options, profiles=warmed(options.profiles, prepared.plan.dims, calls, options.seed))
    return measure(prepared.model, prepared.plan, options)
