"""The three stages a probe can run, each sampled after every call (loop.py).

- eager: the module's forward under ``torch.no_grad()`` (``keep_autograd`` keeps the graph);
- export: ``torch.onnx.export`` of the module with the step's inputs as example arguments
  (static shapes: every exportable model exports so, and shape-keyed Python caches in forward
  see concrete sizes, as they do when users export);
- inference: one export with the varying dims dynamic, then an ONNX Runtime session run over the
  schedule (CUDA provider on a CUDA device, else CPU), with session, provider and run options
  open to fixers.

A probe runs one or more *targets* (targets.py): a module and the inputs it receives at each step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bisector.model.curve import MemoryCurve
from bisector.model.schedule import Step
from bisector.probe.export import export_for_inference, export_onnx, export_step_index, resolve_exporter, varying_dims
from bisector.probe.loading import WorkloadError, one_line, user_traceback
from bisector.probe.loop import Context, run_loop
from bisector.probe.ort import InputAdapter, make_feed, make_run_options, make_session
from bisector.probe.targets import Target, who


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def stage_eager(ctx: Context) -> MemoryCurve:
    import torch

    grad = torch.enable_grad if ctx.options.keep_autograd else torch.no_grad

    def call(i: int, step: Step) -> None:
        for target in ctx.targets:
            for args, kwargs in target.calls(i, step):
                try:
                    with grad():
                        out = target.module(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - the user's forward
                    raise WorkloadError(
                        "forward", f"forward of {who(target)} raised {one_line(exc)}", user_traceback(exc)
                    ) from None
                del out
        _sync(ctx.device)

    return run_loop(ctx, call)


def stage_export(ctx: Context) -> MemoryCurve:
    """Repeated exports with each step's inputs as examples, static shapes.

    Not dynamic dims: with dynamic shapes torch 2.13's exporter itself keeps FakeTensorMode
    dispatch-cache entries keyed by fresh symbols on every export (~2,700 objects per export for
    the 5-layer sample CNN, growing with the op count), which a trivial control cannot subtract and
    which would be blamed on every model. Static exports keep only the ~58 objects per export that
    the control measures. The inference stage's single export does use dynamic dims."""
    path = ctx.workdir / "export.onnx"
    ctx.meta["exporter"] = resolve_exporter(ctx.options.exporter)

    def call(i: int, step: Step) -> None:
        for target in ctx.targets:
            for args, kwargs in target.calls(i, step)[:1]:
                export_onnx(target, args, kwargs, path, ctx.options)

    return run_loop(ctx, call)


def stage_inference(ctx: Context) -> MemoryCurve:
    sessions = []
    ex = export_step_index(ctx.schedule)
    started = time.perf_counter()
    # The whole model's file may have been written once for the run by an export-file probe
    # (lab/exports.py): the same export this loop would make, and a process that, like a serving
    # one, loads an ONNX file without the exporter's memory in it.
    shared = Path(ctx.exported) if ctx.exported and len(ctx.targets) == 1 and Path(ctx.exported).exists() else None
    ctx.meta["shared_export"] = shared is not None
    for k, target in enumerate(ctx.targets):
        if not target.calls(ex, ctx.schedule.steps[ex]):
            continue
        path = shared or ctx.workdir / f"inference_{k}.onnx"
        if shared is None:
            export_for_inference(target, ctx.schedule, ctx.options, path)
        dims = varying_dims(target, ctx.schedule)
        sessions.append((target, make_session(path, ctx.options, ctx.device), InputAdapter(ctx.options, dims, target)))
    run_options = make_run_options(ctx.options)
    if ctx.options.warmup == "largest":
        # One run at the largest input of every range before serving (#11627): the arena takes
        # its full size up front instead of growing with each new largest input.
        # Twice: the memory pattern for a shape is recorded on its first run, applied from the second.
        big = max(range(len(ctx.schedule.steps)), key=lambda i: math.prod(ctx.schedule.steps[i].dims.values()))
        for _ in range(2):
            for target, session, adapt in sessions:
                for args in target.calls(big, ctx.schedule.steps[big]):
                    session.run(None, adapt.feed(make_feed(session, target, args), session), run_options)
    ctx.meta["exporter"] = resolve_exporter(ctx.options.exporter)
    ctx.meta["export_s"] = round(time.perf_counter() - started, 3)
    ctx.meta["providers"] = sessions[0][1].get_providers() if sessions else []

    feeds = _premade_feeds(ctx, sessions)

    def run(target: Target, session: Any, feed: dict[str, Any]) -> None:
        try:
            session.run(None, feed, run_options)
        except Exception as exc:  # noqa: BLE001
            raise WorkloadError(
                "run", f"ONNX Runtime failed running {who(target)}: {one_line(exc)}", user_traceback(exc)
            ) from None

    def call(i: int, step: Step) -> None:
        if feeds is not None:
            for (target, session, _), per_call in zip(sessions, feeds[step.key()]):
                for feed in per_call:
                    run(target, session, feed)
            return
        for target, session, adapt in sessions:
            for args in target.calls(i, step):
                run(target, session, adapt.feed(make_feed(session, target, args), session))

    return run_loop(ctx, call)


PREMADE_FEEDS_LIMIT = 512 * 1024 * 1024


def _premade_feeds(
    ctx: Context, sessions: list[tuple[Any, Any, Any]]
) -> dict[tuple, list[list[dict[str, Any]]]] | None:
    """The feeds, made before the loop, one set per input shape, so that what the loop measures
    is ONNX Runtime's memory alone: inputs made per run would leave their own high-water mark
    in the C heap, which this stage does not trim. None when too large to hold: made per run."""
    feeds: dict[tuple, list[list[dict[str, Any]]]] | None = {}
    held = 0
    for i, step in enumerate(ctx.schedule.steps):
        if feeds is None or step.key() in feeds:
            continue
        per_target = [
            [adapt.feed(make_feed(session, target, args), session) for args in target.calls(i, step)]
            for target, session, adapt in sessions
        ]
        held += sum(a.nbytes for t in per_target for f in t for a in f.values())
        feeds[step.key()] = per_target
        if held > PREMADE_FEEDS_LIMIT:
            feeds = None
            ctx.meta["feeds"] = "made per run (inputs too large to hold)"
    return feeds


STAGE_RUNNERS: dict[str, Callable[[Context], MemoryCurve]] = {
    "eager": stage_eager,
    "export": stage_export,
    "inference": stage_inference,
}
