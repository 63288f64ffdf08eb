"""Repairing one model of a run: find and fix it through the pipeline (patches are composed later,
over every model), and its row of the summary. Run by the local executor's threads and by Ray
tasks alike, with the same `RepairSettings`."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bisector.common.errors import BisectorError
from bisector.common.project import project_root
from bisector.fix.sources import registration_site
from bisector.judge.ceiling import stage_ceilings
from bisector.judge.choice import not_chosen
from bisector.judge.fail_on import FailOn
from bisector.options.config import as_list
from bisector.patching.diff import source_patches
from bisector.patching.from_report import ModelWork, work_for
from bisector.pipeline import run as pipeline
from bisector.pipeline.prepare import Prepared, prepare
from bisector.pipeline.run import FixOutcome, FixRequest, Status
from bisector.repairs.manifest import ModelEntry, entry_options, model_key
from bisector.repairs.results import CLEAN, UNFIXED, ModelResult
from bisector.reports.artifacts import write_artifacts

# What the summary keeps of each culprit.
CULPRIT_KEYS = (
    "region",
    "stage",
    "kind",
    "growth_bytes_per_call",
    "growth_bytes_per_new_shape",
    "own_code",
    "registered_at",
)


@dataclass(frozen=True)
class RepairSettings:
    """How a run repairs its models, the same for each of them (the options of `bisector repair`
    that are not a model's own)."""

    out: Path = Path(".bisector/repair")
    jobs: int | None = None  # probes at once (local: over every model; Ray: per task); None: the CPUs
    models_at_once: int = 2  # local executor: models repaired side by side
    allow_output_changes: bool = False
    fresh: bool = False
    report_dir: Path | None = None  # an HTML report per model, and an index over them
    executor: str = "local"  # local | ray
    address: str | None = None  # the Ray cluster to join (None: a Ray started here)

    @property
    def extra(self) -> dict[str, Any]:
        """The run's options that change a model's result: part of its resume key."""
        return {"allow_output_changes": self.allow_output_changes}


def repair_one(
    entry: ModelEntry, settings: RepairSettings, *, pool: Any, probes: Any, run_dir: Path, jobs: int | None
) -> tuple[ModelResult, ModelWork | None]:
    """One model's result and edits. `run_dir` holds its run data and, when it stays unfixed, its
    repro bundles; `jobs` is this model's share of probes (the executor's, not always settings')."""
    started = time.perf_counter()
    try:
        request = fix_request(entry, settings.allow_output_changes)
        prepared = prepare(entry.spec, replace(entry_options(entry, jobs), run_dir=str(run_dir)))
        outcome = pipeline.fix(prepared, request, pool=pool, executor=probes)
    except BisectorError as exc:
        return ModelResult.failed(entry, str(exc).splitlines()[0], time.perf_counter() - started), None
    found, report = outcome.found, outcome.report
    assert found is not None and report is not None
    o = entry.options
    work = work_for(
        report,
        model_key(entry),
        entry.path("export_script"),
        entry.path("infer_script"),
        pick=request.pick,
        prefer=o.get("prefer"),
    )
    # A model without culprits is clean here even when a stage was inconclusive: the summary's
    # verdict and stages columns show that (as before the one pipeline).
    status = CLEAN if not found.culprits or outcome.status == Status.UNPROVEN else outcome.status.value
    _publish(entry, settings, run_dir, prepared, outcome, work, unfixed=status == UNFIXED)
    return ModelResult(
        entry.name,
        entry.label or entry.spec,
        status,
        verdict=found.verdict,
        culprits=_culprits(prepared, outcome),
        kept=tuple(e.to_json() for c in found.culprits for e in report.for_culprit(c) if _chosen(outcome, e)),
        error=_unpicked_note(outcome),
        wall_s=time.perf_counter() - started,
        probes=report.probes + found.probes,
        stages={st: r.kind for st, r in found.measure.stages.items()},
        stage_errors=dict(outcome.stage_errors),
        ceilings=_ceilings(prepared, outcome),
        budget=request.fail_on.budget,
        timings=outcome.phase_times.to_json(),
    ), work


def fix_request(entry: ModelEntry, allow_output_changes: bool) -> FixRequest:
    """The entry's fixers, choice of fix and fail-on policy, for the pipeline: the patches are
    composed over every model afterwards, so the pipeline writes none."""
    o = entry.options
    pick = int(o["pick"]) if o.get("pick") else None
    return FixRequest(
        fixers=tuple(as_list(o.get("fixers"), "fixers")),
        allow_output_changes=allow_output_changes,
        pick=pick,
        prefer=o.get("prefer"),
        patch=False,
        unmeasured_is_error=True,
        fail_on=FailOn.parse(o.get("fail_on"), o.get("budget")),
        # A manifest's prefer/pick may ask for a fix of growth the policy accepts.
        only_failing=not (pick or o.get("prefer")),
    )


def _chosen(outcome: FixOutcome, fix: Any) -> bool:
    return any(fix is e for e in outcome.chosen)


def _culprits(prepared: Prepared, outcome: FixOutcome) -> tuple[dict[str, Any], ...]:
    """Each culprit as the summary shows it; one in the model's own code names where its hook was registered."""
    assert outcome.found is not None
    culprits = [{k: v for k, v in c.to_json().items() if k in CULPRIT_KEYS} for c in outcome.found.culprits]
    return tuple(
        {**c, "registered_at": registration_site(prepared.model, c["region"])} if c.get("own_code") else c
        for c in culprits
    )


def _unpicked_note(outcome: FixOutcome) -> str:
    """When every culprit has kept fixes but some had none chosen: why, and how to choose."""
    found, report = outcome.found, outcome.report
    assert found is not None and report is not None
    best = [e for c in found.culprits for e in report.for_culprit(c) if _chosen(outcome, e)]
    if not (found.culprits and len(best) < len(found.culprits) and all(report.fixed(c) for c in found.culprits)):
        return ""
    unpicked = [c for c in found.culprits if not any(_chosen(outcome, e) for e in report.for_culprit(c))]
    why = "; ".join(not_chosen([e for e in report.for_culprit(c) if e.kept]) for c in unpicked)
    return f"{why}; choose one with `prefer` or `pick`"


def _ceilings(prepared: Prepared, outcome: FixOutcome) -> dict[str, list[dict[str, Any]]]:
    """Bounded shape-growth's ceilings per stage, where a stage has them."""
    assert outcome.found is not None
    return {
        st: [c.to_json() for c in found]
        for st, r in outcome.found.measure.stages.items()
        if (found := stage_ceilings(r, prepared.plan.dims))
    }


def _publish(
    entry: ModelEntry,
    settings: RepairSettings,
    run_dir: Path,
    prepared: Prepared,
    outcome: FixOutcome,
    work: ModelWork | None,
    unfixed: bool,
) -> None:
    """What goes upstream: a repro bundle for every culprit no fix could flatten; the HTML report when
    asked, with this model's own source edits (the shared scripts' patches are composed later)."""
    own, _ = source_patches(work.edits, str(project_root(prepared.model.path))) if work is not None else ([], [])
    write_artifacts(
        outcome.report,
        settings.report_dir / entry.name if settings.report_dir else None,
        run_dir / "bundles" / entry.name if unfixed else None,
        [{"path": p.rel, "summary": p.summary, "diff": p.diff} for p in own if p.changed],
        unfixed_only=True,
    )
