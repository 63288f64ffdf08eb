"""One stage measured on a lab (Lab.stage): the model and its control over the stage's schedule,
judged; rerun with more iterations while unsure or while a clean verdict's floor is above the
stage's target (within the time budget, lab/retry.py). A per-call leak that only bytes show is
traced to its owners (owners.py); eager growth per new shape that only bytes show is measured again
with torch's oneDNN primitive cache off (attribution.py)."""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING

from bisector.common.units import per
from bisector.judge.attribution import needs_native_twin, needs_owners, needs_second_schedule, second_schedule
from bisector.judge.verdict import INCONCLUSIVE, Verdict, judge
from bisector.lab.results import CRASHED, FAILED, MeasureOptions, StageResult
from bisector.lab.retry import MIN_GAIN, Attempt, budget_note, floor_short, retrying, scale_for
from bisector.lab.twins import traced
from bisector.model.curve import MemoryCurve
from bisector.model.schedule import Schedule
from bisector.probe.types import ProbeFailed, ProbeOk, ProbeRequest

if TYPE_CHECKING:
    from bisector.lab.stage import Lab


def count_phases(stage: str) -> tuple[str, ...]:
    """Phases whose object counts are judged: exports build a new graph per call, so only the
    repeated shapes say anything about counts there."""
    return ("repeat",) if stage == "export" else ("repeat", "novel", "within")


def judged(curve: MemoryCurve, control: MemoryCurve | None, options: MeasureOptions, stage: str) -> Verdict:
    """A curve of this stage judged against its control with the run's bands, metric and floor target."""
    return judge(
        curve,
        control,
        options.bands,
        options.metric,
        count_phases=count_phases(stage),
        step=per(stage),
        floor_target=options.floor_targets.get(stage, 0.0),
    )


def _cancel(*futures: Future | None) -> None:
    for fut in futures:
        if fut is not None:
            fut.cancel()


class StageRun:
    """The attempts at one stage of one lab, and what they leave for the next: the probes run, the
    last attempt's scale and time, and the floor each scale reached (to see a chase still gains)."""

    def __init__(self, lab: Lab, stage: str, options: MeasureOptions) -> None:
        self.lab, self.stage, self.options = lab, stage, options
        self.probes = 0
        self.timing: dict[str, float] = {}  # the last attempt's scale and wall time
        self.floors: dict[int, float] = {}  # scale: the floor it reached

    def result(self) -> StageResult:
        options, stage = self.options, self.stage
        result: StageResult = retrying(
            self.attempt, self.settled, self.lab.options.retries, options.budget_s, self.chase
        ).value
        if result.verdict is not None and needs_second_schedule(
            result.verdict, options.floor_targets.get(stage, 0.0), stage
        ):
            result = self._second_schedule(result)
        short = floor_short(result.verdict, options, stage) if result.verdict is not None else None
        if short and result.verdict is not None:
            # The budget ran out (or the noise held the floor up) before the target: say so, with the
            # floor reached, how long the target would take and the model's own noise.
            v = result.verdict
            scale, took = self.timing.get("scale", 1), self.timing.get("took", 0.0)
            held = bool(self.timing.get("noise_held"))
            note = budget_note(v, options.floor_targets[stage], int(scale), took, per(stage), held)
            v = replace(v, kind=INCONCLUSIVE, reasons=v.reasons + (f"{short}: {note}",))
            result = replace(result, kind=INCONCLUSIVE, verdict=v)
        return result

    def _second_schedule(self, result: StageResult) -> StageResult:
        """A small leak only native bytes explain, measured again on another seed's schedule at the
        last attempt's scale (attribution.needs_second_schedule): model and control, judged, no
        tracing; the verdict kept or made inconclusive (attribution.second_schedule)."""
        assert result.verdict is not None
        scale, seed = int(self.timing.get("scale", 1)), self.options.seed + 1
        schedule = self.lab.schedule(self.stage, scale, seed=seed)
        label = f" (seed {seed})"
        model = self.request(schedule, scale, False)
        control = self.request(schedule, scale, True)
        fut_model = self.lab.runner.submit(model.with_(label=model.label + label))
        fut_control = self.lab.runner.submit(control.with_(label=control.label + label))
        got, ctrl = fut_model.result(), fut_control.result()
        self.probes += 2
        second = (
            judged(got.curve, ctrl.curve if isinstance(ctrl, ProbeOk) else None, self.options, self.stage)
            if isinstance(got, ProbeOk)
            else None
        )
        target = self.options.floor_targets.get(self.stage, 0.0)
        verdict = second_schedule(result.verdict, second, seed, per(self.stage), target)
        return replace(result, kind=verdict.kind, verdict=verdict, probes=self.probes)

    def attempt(self, n: int, scale: int) -> Attempt:
        began = time.perf_counter()
        a = self._attempt(n, scale)
        self.timing.update(scale=scale, took=time.perf_counter() - began)
        return a

    def request(self, schedule: Schedule, scale: int, control: bool) -> ProbeRequest:
        suffix = f" x{scale}" if scale > 1 else ""
        # The whole model's inference probes load one export of the run (lab/exports.py).
        shared = self.lab.exports.path(self.lab, schedule) if self.stage == "inference" and not control else ""
        return ProbeRequest(
            model=self.lab.model,
            plan=self.lab.plan,
            stage=self.stage,
            schedule=schedule,
            options=self.options.probe,
            control=control,
            label=f"{self.stage}{' control' if control else ''}{suffix}",
            exported=shared,
        )

    def _attempt(self, n: int, scale: int) -> Attempt:
        lab, stage, options = self.lab, self.stage, self.options
        schedule = lab.schedule(stage, scale, seed=options.seed)
        model, control = self.request(schedule, scale, False), self.request(schedule, scale, True)
        fut_model = lab.runner.submit(model)
        fut_control = lab.runner.submit(control)
        # Exports are the costly probes, and a dynamo export's heap grows with the graph in
        # torch's own files: its traced probes start with the others rather than after them.
        # Not for exports in a child process: what the exporter keeps goes with the child, the
        # verdict rarely asks who owns growth, and the traced probes would take the cores from
        # the other fix candidates' measurements.
        speculate = (
            stage == "export"
            and n == 0
            and options.probe.exporter != "torchscript"
            and not options.probe.export_in_child
        )
        twins = [lab.runner.submit(traced(r, stage)) if speculate else None for r in (model, control)]
        got = fut_model.result()
        if not isinstance(got, ProbeOk):
            # The model cannot run this stage: its control run would measure nothing of use.
            _cancel(fut_control, *twins)
            kind = FAILED if isinstance(got, ProbeFailed) else CRASHED
            return Attempt(
                StageResult(stage, kind, failure=got, probes=self.probes + 1, attempts=n + 1), None, final=True
            )
        ctrl = fut_control.result()
        self.probes += 2
        control_curve = ctrl.curve if isinstance(ctrl, ProbeOk) else None
        verdict = self._verdict(got, control_curve, (model, control), twins)
        result = StageResult(
            stage,
            verdict.kind,
            verdict=verdict,
            curve=got.curve,
            control=control_curve,
            control_failure=None if isinstance(ctrl, ProbeOk) else ctrl,
            probes=self.probes,
            attempts=n + 1,
        )
        return Attempt(result, verdict)

    def _verdict(
        self,
        got: ProbeOk,
        control_curve: MemoryCurve | None,
        requests: tuple[ProbeRequest, ProbeRequest],
        twins: list[Future | None],
    ) -> Verdict:
        """The model's curve judged, then asked whose growth it is where only bytes show it."""
        stage, options = self.stage, self.options
        verdict = judged(got.curve, control_curve, options, stage)
        # Objects that grow in the exporter or the runtime may be theirs (probe/objects.py);
        # in eager, the model's forward made them.
        if needs_owners(verdict, objects=stage != "eager"):
            verdict = self.lab._attribute(verdict, *requests, stage, twin=twins[0], twin_control=twins[1])
            self.probes += 2
        else:
            _cancel(*twins)
        # The device the probe ran on ("auto" resolves in the child).
        if needs_native_twin(verdict, stage, str(got.curve.meta.get("device") or options.probe.device)):
            verdict = self.lab._native_twin(verdict, requests[0], control_curve, stage)
            self.probes += 1
        return verdict

    def settled(self, a: Attempt) -> bool:
        return (
            a.verdict is not None
            and a.verdict.kind != INCONCLUSIVE
            and not floor_short(a.verdict, self.options, self.stage)
        )

    def chase(self, a: Attempt, scale: int) -> int | None:
        v = a.verdict
        if not floor_short(v, self.options, self.stage) or v is None or v.floor_bytes_per_call is None:
            return None
        self.floors[scale] = v.floor_bytes_per_call
        before = [f for s, f in self.floors.items() if s < scale]
        if before and v.floor_bytes_per_call > (1 - MIN_GAIN) * min(before):
            self.timing["noise_held"] = 1.0
            return 0  # the noise grew with the passes: more of them would not lower the floor
        return scale_for(v.floor_bytes_per_call, self.options.floor_targets[self.stage], scale)
