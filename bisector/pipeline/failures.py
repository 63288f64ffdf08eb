"""The failure policy: what a stage that could not run means for find and fix, in one place.

A stage whose exporter lacks (or mis-emits) an operator becomes a culprit a fixer can work on
(unsupported-op); any other failed stage is the user's to fix (a clear error, exit 2), with a hint
that names the flag or the fix to try; a crashed, hung or capped probe is "not measured", never clean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from bisector.common.errors import BisectorError, InternalError, UserError
from bisector.common.units import format_bytes
from bisector.find.localise import Culprit, FindReport, StageSearch
from bisector.fixers.base import UNSUPPORTED_OP
from bisector.fixers.onnx_symbolics import failing_operators
from bisector.lab.results import CRASHED, FAILED, MeasureReport
from bisector.model.figures import Figures
from bisector.probe.pool import default_mem_cap


def failure_culprits(found: FindReport) -> FindReport:
    """Stages that failed because the exporter lacks (or mis-emits) an operator become culprits of
    kind unsupported-op, so fixers can make them export; other failures stay failures."""

    searches = dict(found.searches)
    for stage, r in found.measure.stages.items():
        if r.failure is None or getattr(r.failure, "where", None) not in ("export", "session"):
            continue
        if stage in searches and searches[stage].culprits:
            continue
        message = r.failure.message
        ops = failing_operators(message)
        if not ops:
            continue
        culprit = Culprit(
            region="",
            stage=stage,
            kind=UNSUPPORTED_OP,
            own_code=False,
            type="",
            figures=Figures(operators=tuple(ops)),
            chain=(("", UNSUPPORTED_OP),),
            hint=f"the {stage} stage fails on {', '.join(ops)}: {message}",
        )
        searches[stage] = StageSearch(stage, root=r, culprits=(culprit,))
    return replace(found, searches=searches) if searches != dict(found.searches) else found


def unfixable_failures(found: FindReport) -> list[str]:
    """Failed stages that are not culprits (nothing to fix, the model did not run), and stages
    whose probe crashed, hung or hit the memory cap (not measured: never "clean")."""
    turned = {c.stage for c in found.culprits if c.kind == UNSUPPORTED_OP}
    return [
        f"{s}: {getattr(r.failure, 'message', None) or r.failure.describe()}"
        for s, r in found.measure.stages.items()
        if r.kind in (FAILED, CRASHED) and s not in turned
    ]


def stage_errors(found: FindReport, crashed: bool = True) -> dict[str, str]:
    """Stages that could not run and are no culprit (failed, and with crashed=True those whose
    probe crashed, hung or hit the cap), each as one line: reported as that stage's error while
    the other stages are found and fixed. Empty when no stage was measured at all (the model's
    error then, as before)."""
    turned = {c.stage for c in found.culprits if c.kind == UNSUPPORTED_OP}
    kinds = (FAILED, CRASHED) if crashed else (FAILED,)
    broken = {s: r for s, r in found.measure.stages.items() if r.kind in kinds and s not in turned}
    if not broken or not any(r.verdict is not None for r in found.measure.stages.values()):
        return {}
    out = {}
    for s, r in broken.items():
        message = getattr(r.failure, "message", None) or (r.failure.describe() if r.failure is not None else r.kind)
        line = str(message).strip().splitlines()[0] if str(message).strip() else str(r.kind)
        out[s] = f"error: {line[:200]}" if r.kind == FAILED else f"{r.kind}: {line[:200]}"
    return out


def unexported(found: FindReport, kept: Callable[[Culprit], bool]) -> dict[str, str]:
    """Stages that failed on an operator (unsupported-op culprits) and that no fix made run (kept:
    whether a fix was kept for the culprit): like any stage that cannot run, each is that stage's
    error, one line, while the other stages are found and fixed (issue 21, item 4). A fix that made
    it run but leak leaves the culprit as it is: unfixed, not an error. Empty when no other stage was
    measured (the model's own status then, as stage_errors does)."""
    out = {}
    for c in found.culprits:
        if c.kind != UNSUPPORTED_OP or kept(c):
            continue
        r = found.measure.stages.get(c.stage)
        message = str(getattr(getattr(r, "failure", None), "message", "") or c.hint).strip()
        out[c.stage] = f"error: {message.splitlines()[0][:200] if message else UNSUPPORTED_OP}"
    ran = [r for s, r in found.measure.stages.items() if s not in out and r.verdict is not None]
    return out if ran else {}


def failure_error(report: MeasureReport, skip: Iterable[str] = ()) -> BisectorError | None:
    """The first stage whose model could not run or export, as a user error (exit 2)."""
    for r in report.stages.values():
        if r.kind == FAILED and r.stage not in skip:
            f = r.failure
            if f.where == "internal":
                return InternalError(f.message)
            hint = {
                "export": (
                    f"; try --exporter {'dynamo' if 'torchscript exporter' in f.message else 'torchscript'}, "
                    "or --stage eager to measure the forward only"
                ),
                "session": "; the exported graph does not load in ONNX Runtime (try another --exporter)",
                "inputs": "; check --input, or the model file's bisector_inputs()",
                "forward": "; check that --input matches the forward's arguments",
            }.get(f.where, "")
            if _out_of_memory(f.message):
                # Not an input mistake: the model asked for more memory than the probe could get.
                hint = (
                    f"; the {f.where} ran out of memory: the model allocates more than this machine (or "
                    f"--mem-cap, {format_bytes(report.options.mem_cap or default_mem_cap())}) allows; check what "
                    "it allocates, or lower the --dim ranges"
                )
            if f.where in ("export", "session"):
                ops = failing_operators(f.message)
                if ops:
                    hint = f"; `bisector fix` tries a symbolic for {', '.join(ops)} or another exporter" + hint
            if getattr(f, "probe_dir", ""):
                hint += f" (probe folder kept: {f.probe_dir})"
            return UserError(f"{r.stage} stage: {f.message}{hint}", detail=f.traceback)
    return None


# What an allocation that failed says: Python's MemoryError, torch's CPU and CUDA allocators, C++.
_OOM = ("MemoryError", "can't allocate memory", "not enough memory", "out of memory", "bad_alloc")


def _out_of_memory(message: str) -> bool:
    return any(m in message for m in _OOM)
