"""Measure each stage of one model against a control (see lab.py for how a stage is measured).

For every stage asked for: run the model and the trivial control module over the stage's schedule
in child processes (in parallel, up to ``jobs``) and judge the model's curve against the control's,
with the lab's retries. Control runs are cached on disk (they depend only on the inputs, the
schedule, the options and the installed versions), so a second run, or another model with the
same inputs, does not pay for them again. Nothing is kept in a run directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bisector.common.units import format_bytes, per, probes_text
from bisector.judge.ceiling import describe, stage_ceilings
from bisector.lab.results import MeasureOptions, MeasureReport, StageResult, stage_order
from bisector.lab.runner import Events, event
from bisector.lab.stage import Lab
from bisector.model.kinds import Kind
from bisector.model.spec import InputPlan, ModelSpec
from bisector.probe.pool import ProbePool
from bisector.probe.types import STAGES

_log = logging.getLogger("bisector")


def measure(
    model: ModelSpec,
    plan: InputPlan,
    options: MeasureOptions = MeasureOptions(),
    events: Events | None = None,
    pool: ProbePool | None = None,
    run_dir: str | Path | None = None,
) -> MeasureReport:
    """run_dir: where the folders of failed or crashed probes are kept (nothing else is)."""
    started = time.perf_counter()
    lab = Lab(model, plan, options, events, keep=False, pool=pool)
    if run_dir is not None:
        lab.runner.keep_failed_in = Path(run_dir) / "failed-probes"
    results: dict[str, StageResult] = {}
    try:
        with ThreadPoolExecutor(max_workers=len(options.stages) or 1, thread_name_prefix="bisector-stage") as stages:
            futures = {s: stages.submit(_stage, lab, s) for s in stage_order(options.stages)}
            try:
                for s in options.stages:
                    results[s] = futures[s].result()
            except KeyboardInterrupt:
                # Kill the probes now: leaving this block waits for the stage threads, which
                # would otherwise wait for every running probe's timeout (300 s by default).
                lab.pool.terminate()
                raise
    finally:
        lab.close()  # an own pool first: kills any control still running for a stage that failed
    ordered = {s: results[s] for s in STAGES if s in results}
    return MeasureReport(
        model=model,
        plan=plan,
        stages=ordered,
        probes=lab.probes,
        wall_s=time.perf_counter() - started,
        options=options,
        reused=lab.reused,
        reused_controls=lab.reused_controls,
    )


def _stage(lab: Lab, stage: str) -> StageResult:
    started = time.perf_counter()
    result = lab.stage(stage)
    log_reasons(result)
    event(
        lab.events,
        "stage_done",
        stage,
        result.kind,
        stage_summary(result, time.perf_counter() - started, lab.plan.dims),
    )
    return result


def log_reasons(result: StageResult) -> None:
    """-v: why a stage got its verdict, one line per reason the verdict gives."""
    for reason in result.verdict.reasons if result.verdict is not None else ():
        _log.info("%s %s: %s", result.stage, result.kind, reason)


def stage_summary(result: StageResult, seconds: float, dims: Mapping[str, Any] | None = None) -> str:
    """One line for progress: the verdict, the growth that decided it (bounded shape-growth with its
    ceiling at the largest declared input: dims, the plan's ranges), the probes and the time."""

    v = result.verdict
    figure = ""
    if v is not None and result.kind == Kind.LEAK:
        figure = f", {format_bytes(v.growth_bytes_per_call, signed=True)}/{per(result.stage)}"
    elif v is not None and result.kind == Kind.SHAPE_GROWTH:
        figure = f", {format_bytes(v.growth_bytes_per_new_shape, signed=True)}/new shape"
        ceiling = describe(stage_ceilings(result, dims or {}))
        figure += f", bounded: {ceiling}" if ceiling else ""
    return f"{result.kind}{figure} ({probes_text(result.probes)}, {seconds:.0f} s)"
