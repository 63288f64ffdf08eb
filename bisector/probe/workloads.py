"""The three stages a probe can run, each sampled after every call.

- eager: the module's forward under ``torch.no_grad()`` (``keep_autograd`` keeps the graph);
- export: ``torch.onnx.export`` of the module with the step's inputs as example arguments
  (static shapes: every exportable model exports so, and shape-keyed Python caches in forward
  see concrete sizes, as they do when users export);
- inference: one export with the varying dims dynamic, then an ONNX Runtime session run over the
  schedule (CUDA provider on a CUDA device, else CPU), with session, provider and run options
  open to fixers.

A probe runs one or more *targets*: a module and the inputs it receives at each step (the whole
model with generated inputs, or a region with the inputs recorded for it).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bisector.curve import METRICS, MemoryCurve, Sample
from bisector.probe.inputs import Args, tensor_leaves
from bisector.probe.loading import WorkloadError, one_line, user_traceback
from bisector.probe.meters import Meters, traced_growth, type_growth
from bisector.probe.types import ProbeOptions
from bisector.schedule import Schedule, Step


@dataclass
class Target:
    """A module to call, and the calls it receives at step i (a region may be called many times)."""

    name: str
    module: Any
    calls: Callable[[int, Step], list[Args]]
    input_names: list[str] | None = None  # names for the tensor inputs, when known
    symbols: list[dict[int, str]] | None = None  # per tensor input: dim index -> symbol name


@dataclass
class Context:
    schedule: Schedule
    targets: list[Target]
    meters: Meters
    options: ProbeOptions
    workdir: Path
    device: str = "cpu"
    meta: dict[str, Any] = field(default_factory=dict)
    owner_roots: list[str] = field(default_factory=list)  # the model's project folders (owners.py)


# ---------------------------------------------------------------------------------------------
# The measurement loop


def _type_snapshot() -> tuple[tuple[str, ...], tuple[int, ...]]:
    # Flat tuples of str and int are untracked by the next collection, so keeping these
    # snapshots does not add to the object counts being measured.
    counts = Meters.type_counts()
    names = tuple(counts)
    values = tuple(counts[n] for n in names)
    return names, values


def _settle() -> None:
    # A collection untracks one level of nested str/int tuples; three cover the snapshots'
    # nesting, so the next sample does not count them.
    import gc

    for _ in range(3):
        gc.collect()


def run_loop(ctx: Context, call: Callable[[int, Step], None]) -> MemoryCurve:
    from collections import Counter

    steps = ctx.schedule.steps
    n = len(steps)
    cols = {m: array("d", [math.nan]) * n for m in METRICS}
    snaps: list[tuple[str, Any]] = []
    traced: list[Any] = []
    phase = None
    # What setup made (the model, an exported graph, a session) is frozen out of the counts and
    # out of every later collection; only what the calls leave behind is measured.
    import gc

    gc.collect()
    gc.freeze()
    ctx.meta["rss_before_loop"] = ctx.meters.proc.memory_info().rss  # what setup (and a warm-up) cost
    tracer = OwnerTracer(ctx, steps) if ctx.options.owners else None
    started = time.perf_counter()
    for i, step in enumerate(steps):
        if step.phase != phase:
            phase = step.phase
            if phase != "warmup":
                snaps.append((phase, _type_snapshot()))
                if phase == "repeat":
                    traced.append(ctx.meters.snapshot())
                _settle()
        if tracer is not None:
            tracer.before(i)
        call(i, step)
        vals = ctx.meters.sample()
        for k, v in vals.items():
            if v is not None:
                cols[k][i] = v
        del vals
        if tracer is not None:
            tracer.after(i)
        if i == n - 1 or steps[i + 1].phase != "repeat":
            if step.phase == "repeat":
                traced.append(ctx.meters.snapshot())
    snaps.append(("end", _type_snapshot()))
    loop_s = time.perf_counter() - started
    if tracer is not None:
        ctx.meta["owners"] = tracer.result()

    samples = tuple(
        Sample(step.phase, dict(step.dims), {m: cols[m][i] for m in METRICS if not math.isnan(cols[m][i])})
        for i, step in enumerate(steps)
    )
    growth: dict[str, dict[str, int]] = {}
    for (name, (n0, v0)), (_, (n1, v1)) in zip(snaps, snaps[1:]):
        growth[name] = type_growth(Counter(dict(zip(n0, v0))), Counter(dict(zip(n1, v1))))
    meta = dict(ctx.meta)
    meta["loop_s"] = round(loop_s, 3)
    if ctx.meters.gpu_source:
        meta["gpu_source"] = ctx.meters.gpu_source
    meta["heap_meter"] = ctx.meters.heap_source or "unavailable"
    if len(traced) == 2:
        meta["traced_top"] = traced_growth(traced[0], traced[1])
    return MemoryCurve(samples=samples, type_growth=growth, meta=meta)


class OwnerTracer:
    """tracemalloc over the measured phases of a traced probe (ProbeOptions.owners frames).

    Tracing starts before the first repeat call; that first pass is the tracer's own warm-up
    (what a traced call allocates once). Snapshots then bracket the rest of the repeat phase (per
    call) and the novel phase (per new shape). The heap meter is read around each snapshot so that
    the snapshot's own memory, held until the next one, is not counted as growth.
    """

    def __init__(self, ctx: Context, steps: tuple[Step, ...]) -> None:
        from bisector.owners import Classifier, installed_own

        self.ctx = ctx
        self.steps = steps
        self.classifier = Classifier(ctx.owner_roots, installed_own())
        repeat = [i for i, s in enumerate(steps) if s.phase == "repeat"]
        novel = [i for i, s in enumerate(steps) if s.phase == "novel"]
        pass_len = max(1, len({steps[i].key() for i in repeat}))
        self.start_at = repeat[0] if repeat else None
        # (phase, first step whose call is inside the span, last step): spans of whole passes.
        self.spans: list[tuple[str, int, int]] = []
        if len(repeat) > pass_len:
            self.spans.append(("repeat", repeat[pass_len], repeat[-1]))
        if novel:
            self.spans.append(("novel", novel[0], novel[-1]))
        self.open: dict[str, tuple[Any, float, int]] = {}
        self.out: dict[str, Any] = {}
        self.started = False  # --tracemalloc may have started tracing already: leave it running then

    def _heap(self) -> float:
        return self.ctx.meters.heap_now() or 0.0

    def before(self, i: int) -> None:
        import tracemalloc as tm

        if i == self.start_at and not tm.is_tracing():
            tm.start(max(1, self.ctx.options.owners))
            self.started = True
        for phase, first, _ in self.spans:
            if i == first:
                before = self._heap()
                snap = tm.take_snapshot()
                self.open[phase] = (snap, before, int(self._heap() - before))

    def after(self, i: int) -> None:
        import tracemalloc as tm

        from bisector.owners import summarize

        for phase, first, last in self.spans:
            if i == last and phase in self.open:
                snap0, heap0, cost = self.open.pop(phase)
                heap1 = self._heap() - cost
                snap1 = tm.take_snapshot()
                diffs = snap1.compare_to(snap0, "traceback")
                self.out[phase] = summarize(diffs, self.classifier, last - first + 1, heap1 - heap0)
                del snap0, snap1, diffs
        if i == len(self.steps) - 1 and self.started:
            tm.stop()

    def result(self) -> dict[str, Any]:
        return dict(self.out)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# eager


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
                        "forward", f"forward of {_who(target)} raised {one_line(exc)}", user_traceback(exc)
                    ) from None
                del out
        _sync(ctx.device)

    return run_loop(ctx, call)


def _who(target: Target) -> str:
    return "the model" if target.name == "" else f"region {target.name!r}"


# ---------------------------------------------------------------------------------------------
# export


def resolve_exporter(name: str | None) -> str:
    """The exporter a plain torch.onnx.export call uses when the user names none."""
    from bisector.patching.settings import installed_default_exporter

    return name or installed_default_exporter()


def export_onnx(
    target: Target,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    path: Path,
    options: ProbeOptions,
    dynamic: list[dict[int, str]] | None = None,
) -> None:
    """One torch.onnx.export of target.module; dynamic: per tensor input, dim -> symbol."""
    import torch

    exporter = resolve_exporter(options.exporter)
    extra = dict(options.export_kwargs)
    bounded = extra.pop("bounded_dims", None)
    symbolics = extra.pop("symbolics", None)
    if symbolics and exporter != "dynamo":
        from bisector.fixers.onnx_symbolics import register

        register(symbolics)  # this child only: every probe is its own process
    leaves = tensor_leaves((args, kwargs))
    names = target.input_names if target.input_names and len(target.input_names) == len(leaves) else [
        f"input_{i}" for i in range(len(leaves))
    ]
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            if bounded and dynamic and not target.symbols:
                raise WorkloadError("export", "bounded dims need the input symbols (--input NAME=DIMS), not recorded inputs")
            if exporter == "dynamo":
                if dynamic and any(dynamic) and "dynamic_shapes" not in extra and "dynamic_axes" not in extra:
                    extra["dynamic_shapes"] = dynamo_dynamic_shapes(target.module, args, kwargs, dynamic, bounded)
                torch.onnx.export(
                    target.module, args, str(path), kwargs=kwargs or None, dynamo=True,
                    verbose=extra.pop("verbose", False), **extra,
                )
            else:
                if dynamic and any(dynamic) and "dynamic_axes" not in extra:
                    extra["dynamic_axes"] = {names[i]: dict(d) for i, d in enumerate(dynamic) if d}
                extra.setdefault("input_names", names)
                torch.onnx.export(target.module, args, str(path), kwargs=kwargs or None, dynamo=False, **extra)
    except Exception as exc:  # noqa: BLE001 - the exporter on the user's model
        raise WorkloadError("export", f"exporting {_who(target)} with the {exporter} exporter failed: {one_line(exc)}", user_traceback(exc)) from None


def dynamo_dynamic_shapes(
    module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], dynamic: list[dict[int, str]],
    bounded: dict[str, Any] | None = None,
) -> Any:
    """torch.export dynamic_shapes mirroring the inputs; varying dims are Dim.AUTO (which also
    infers equal dims across inputs and allows a dim to specialize instead of failing), or, with
    bounds, one named Dim(min, max) per symbol."""
    import inspect

    import torch
    from torch.export import Dim
    from torch.utils import _pytree as pytree

    named = {s: Dim(s, min=int(lo), max=int(hi)) for s, (lo, hi) in (bounded or {}).items()}
    leaves, treespec = pytree.tree_flatten((args, kwargs))
    it = iter(dynamic)
    spec_leaves = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            dims = next(it, {})
            spec_leaves.append({d: named.get(sym, Dim.AUTO) for d, sym in dims.items()} if dims else None)
        else:
            spec_leaves.append(None)
    args_spec, kwargs_spec = pytree.tree_unflatten(spec_leaves, treespec)
    # Keyed by the forward's parameter names: the one form that also fits forward(*args, **kw).
    forward = module.forward if hasattr(module, "forward") else module
    try:
        bound = inspect.signature(forward).bind(*args_spec, **kwargs_spec)
    except (TypeError, ValueError):
        return tuple(args_spec) if not kwargs else None
    return dict(bound.arguments)


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


# ---------------------------------------------------------------------------------------------
# inference


def varying_dims(target: Target, schedule: Schedule) -> list[dict[int, str]]:
    """Which dims of each tensor input change over the schedule: known from the symbols when
    the plan names them, else found by comparing the inputs of a few different steps."""
    if target.symbols is not None:
        return target.symbols
    shapes: list[list[tuple[int, ...]]] = []
    seen: set[tuple] = set()
    for i, step in enumerate(schedule.steps):
        if step.key() in seen:
            continue
        seen.add(step.key())
        calls = target.calls(i, step)
        if calls:
            shapes.append([tuple(t.shape) for t in tensor_leaves(calls[0])])
        if len(shapes) >= 4:
            break
    if not shapes:
        return []
    out: list[dict[int, str]] = []
    for j, first in enumerate(shapes[0]):
        dims: dict[int, str] = {}
        for d in range(len(first)):
            values = {s[j][d] for s in shapes if j < len(s) and d < len(s[j])}
            if len(values) > 1:
                dims[d] = f"in{j}_d{d}"
        out.append(dims)
    return out


def export_step_index(schedule: Schedule) -> int:
    """The step whose inputs serve as export examples: the largest, so no varying dim is 1
    (torch.export specializes dims of size 0 and 1)."""
    best = 0
    best_volume = -1
    for i, step in enumerate(schedule.steps):
        volume = 1
        for v in step.dims.values():
            volume *= v
        if volume > best_volume and all(v >= 2 for v in step.dims.values()):
            best, best_volume = i, volume
    if best_volume < 0:
        best = max(range(len(schedule.steps)), key=lambda i: math.prod(schedule.steps[i].dims.values()), default=0)
    return best


def make_session(path: Path, options: ProbeOptions, device: str) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    for key, value in options.session_options.items():
        if key == "arena_extend_strategy" and device != "cuda":
            # The CPU provider takes no arena options of its own: a shared allocator with this
            # strategy is registered on the environment and the session told to use it.
            strategy = {"kNextPowerOfTwo": 0, "kSameAsRequested": 1}.get(str(value), value)
            cfg = ort.OrtArenaCfg({"arena_extend_strategy": int(strategy)})
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, cfg)
            so.add_session_config_entry("session.use_env_allocators", "1")
        elif "." in key:  # a session config entry, e.g. "session.use_env_allocators"
            so.add_session_config_entry(key, str(value))
        elif key == "graph_optimization_level":
            so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, str(value))
        elif key == "execution_mode":
            so.execution_mode = getattr(ort.ExecutionMode, str(value))
        else:
            setattr(so, key, value)
    if device == "cuda":
        providers: list[Any] = [("CUDAExecutionProvider", dict(options.provider_options)), "CPUExecutionProvider"]
    else:
        providers = [("CPUExecutionProvider", dict(options.provider_options))] if options.provider_options else ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=providers)
    except Exception as exc:  # noqa: BLE001
        raise WorkloadError("session", f"ONNX Runtime could not load the exported model: {one_line(exc)}", user_traceback(exc)) from None


def make_run_options(options: ProbeOptions) -> Any:
    if not options.run_options:
        return None
    import onnxruntime as ort

    ro = ort.RunOptions()
    for key, value in options.run_options.items():
        ro.add_run_config_entry(key, str(value))
    return ro


def _feed(session: Any, target: Target, args: Args) -> dict[str, Any]:
    import torch

    arrays = []
    for t in tensor_leaves(args):
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            raise WorkloadError("run", "bfloat16 inputs cannot be fed to ONNX Runtime from numpy; use float16 or float32")
        arrays.append(t.numpy())
    names = [i.name for i in session.get_inputs()]
    ours = target.input_names or []
    if ours and len(ours) == len(arrays) and set(names) <= set(ours):
        by_name = dict(zip(ours, arrays))
        return {n: by_name[n] for n in names}
    if len(names) != len(arrays):
        raise WorkloadError(
            "run", f"the exported graph of {_who(target)} takes {len(names)} inputs ({', '.join(names)}) but the model got {len(arrays)} tensors"
        )
    return dict(zip(names, arrays))


def stage_inference(ctx: Context) -> MemoryCurve:
    sessions = []
    ex = export_step_index(ctx.schedule)
    started = time.perf_counter()
    for k, target in enumerate(ctx.targets):
        calls = target.calls(ex, ctx.schedule.steps[ex])
        if not calls:
            continue
        args, kwargs = calls[0]
        path = ctx.workdir / f"inference_{k}.onnx"
        dims = varying_dims(target, ctx.schedule)
        export_onnx(target, args, kwargs, path, ctx.options, dynamic=dims)
        post_export(path, ctx.options, [tuple(t.shape) for t in tensor_leaves((args, kwargs))])
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
                    session.run(None, adapt.feed(_feed(session, target, args), session), run_options)
    ctx.meta["exporter"] = resolve_exporter(ctx.options.exporter)
    ctx.meta["export_s"] = round(time.perf_counter() - started, 3)
    ctx.meta["providers"] = sessions[0][1].get_providers() if sessions else []

    # The feeds are made before the loop, one set per input shape, so that what the loop measures
    # is ONNX Runtime's memory alone: inputs made per run would leave their own high-water mark
    # in the C heap, which this stage does not trim. (Too large to hold: made per run instead.)
    feeds: dict[tuple, list[list[dict[str, Any]]]] | None = {}
    held = 0
    for i, step in enumerate(ctx.schedule.steps):
        if feeds is None or step.key() in feeds:
            continue
        per_target = [[adapt.feed(_feed(session, target, args), session) for args in target.calls(i, step)] for target, session, adapt in sessions]
        held += sum(a.nbytes for t in per_target for f in t for a in f.values())
        feeds[step.key()] = per_target
        if held > PREMADE_FEEDS_LIMIT:
            feeds = None
            ctx.meta["feeds"] = "made per run (inputs too large to hold)"

    def run(target: Target, session: Any, feed: dict[str, Any]) -> None:
        try:
            session.run(None, feed, run_options)
        except Exception as exc:  # noqa: BLE001
            raise WorkloadError("run", f"ONNX Runtime failed running {_who(target)}: {one_line(exc)}", user_traceback(exc)) from None

    def call(i: int, step: Step) -> None:
        if feeds is not None:
            for (target, session, _), per_call in zip(sessions, feeds[step.key()]):
                for feed in per_call:
                    run(target, session, feed)
            return
        for target, session, adapt in sessions:
            for args in target.calls(i, step):
                run(target, session, adapt.feed(_feed(session, target, args), session))

    return run_loop(ctx, call)


PREMADE_FEEDS_LIMIT = 512 * 1024 * 1024


def post_export(path: Path, options: ProbeOptions, shapes: list[tuple[int, ...]]) -> None:
    """Passes on the exported graph that fixers ask for (onnxsim)."""
    passes = [p for p in options.post_export if p.startswith("onnxsim")]
    if not passes:
        return
    try:
        import onnx
        import onnxsim

        model = onnx.load(str(path))
        kwargs: dict[str, Any] = {}
        if "onnxsim-fixed" in passes:
            names = [i.name for i in model.graph.input]
            kwargs["overwrite_input_shapes"] = {n: list(s) for n, s in zip(names, shapes)}
        simplified, ok = onnxsim.simplify(model, **kwargs)
        if not ok:
            raise WorkloadError("export", "onnxsim could not check the simplified graph against the original")
        onnx.save(simplified, str(path))
    except WorkloadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise WorkloadError("export", f"onnxsim failed: {one_line(exc)}", user_traceback(exc)) from None


class InputAdapter:
    """What fixers do to inputs on their way to the runtime: round varying dims up to a multiple
    (zero padding), and the guard of bounded dims (sizes outside the range are refused)."""

    def __init__(self, options: ProbeOptions, dims: list[dict[int, str]], target: Target) -> None:
        self.multiple = 0
        if options.input_transform and options.input_transform.startswith("round:"):
            self.multiple = int(options.input_transform.split(":", 1)[1])
        self.dims = dims
        bounded = dict(options.export_kwargs).get("bounded_dims") or {}
        self.bounds = {k: (int(v[0]), int(v[1])) for k, v in bounded.items()}

    def feed(self, feed: dict[str, Any], session: Any) -> dict[str, Any]:
        if not self.multiple and not self.bounds:
            return feed
        # The very functions a kept fix copies into the user's serving code.
        from bisector.patching.script_helpers import _bisector_guard, _bisector_pad

        axes = {name: self.dims[j] for j, name in enumerate(feed) if j < len(self.dims)}
        try:
            _bisector_guard(feed, axes, self.bounds)
        except ValueError as exc:
            raise WorkloadError("run", str(exc)) from None
        return _bisector_pad(feed, self.multiple, axes) if self.multiple else dict(feed)


STAGE_RUNNERS: dict[str, Callable[[Context], MemoryCurve]] = {
    "eager": stage_eager,
    "export": stage_export,
    "inference": stage_inference,
}
