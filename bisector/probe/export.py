"""One torch.onnx.export of a target, the dims left dynamic, and the passes on the exported graph.

Used by the export stage (static shapes, one export per call), the inference stage (one export
with the varying dims dynamic), the equivalence check and the repro bundle.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from bisector.model.choices import choose_exporter
from bisector.model.schedule import Schedule
from bisector.probe.inputs import tensor_leaves
from bisector.probe.loading import WorkloadError, one_line, user_traceback
from bisector.probe.targets import Target, who
from bisector.probe.types import ProbeOptions


def resolve_exporter(name: str | None) -> str:
    """The exporter a plain torch.onnx.export call uses when the user names none."""
    from bisector.patching.settings import installed_default_exporter

    return choose_exporter(name, default=installed_default_exporter)


def export_onnx(
    target: Target,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    path: Path,
    options: ProbeOptions,
    dynamic: list[dict[int, str]] | None = None,
) -> None:
    """One torch.onnx.export of target.module; dynamic: per tensor input, dim -> symbol."""
    if options.export_in_child:
        return in_child(lambda: export_onnx(target, args, kwargs, path, replace(options, export_in_child=""), dynamic))
    import torch

    exporter = resolve_exporter(options.exporter)
    extra = dict(options.export_kwargs)
    if isinstance(extra.get("dynamic_axes"), Mapping):
        extra["dynamic_axes"] = _axes_from_json(extra["dynamic_axes"])
    bounded = extra.pop("bounded_dims", None)
    symbolics = extra.pop("symbolics", None)
    if symbolics and exporter != "dynamo":
        from bisector.fixers.onnx_symbolics import register

        register(symbolics)  # this child only: every probe is its own process
    leaves = tensor_leaves((args, kwargs))
    names = (
        target.input_names
        if target.input_names and len(target.input_names) == len(leaves)
        else [f"input_{i}" for i in range(len(leaves))]
    )
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            if bounded and dynamic and not target.symbols:
                raise WorkloadError(
                    "export", "bounded dims need the input symbols (--input NAME=DIMS), not recorded inputs"
                )
            if exporter == "dynamo":
                if dynamic and any(dynamic) and "dynamic_shapes" not in extra and "dynamic_axes" not in extra:
                    extra["dynamic_shapes"] = dynamo_dynamic_shapes(target.module, args, kwargs, dynamic, bounded)
                torch.onnx.export(
                    target.module,
                    args,
                    str(path),
                    kwargs=kwargs or None,
                    dynamo=True,
                    verbose=extra.pop("verbose", False),
                    **extra,
                )
            else:
                if dynamic and any(dynamic) and "dynamic_axes" not in extra:
                    extra["dynamic_axes"] = {names[i]: dict(d) for i, d in enumerate(dynamic) if d}
                extra.setdefault("input_names", names)
                torch.onnx.export(target.module, args, str(path), kwargs=kwargs or None, dynamo=False, **extra)
    except Exception as exc:  # noqa: BLE001 - the exporter on the user's model
        message = f"exporting {who(target)} with the {exporter} exporter failed: {one_line(exc)}"
        raise WorkloadError("export", message, user_traceback(exc)) from None


def in_child(export: Callable[[], None]) -> None:
    """Run one export in a forked child process and wait for it (ProbeOptions.export_in_child):
    the parent keeps nothing the exporter allocates. Fork, not spawn: the model and its inputs are
    already in memory, and nothing needs pickling. The child's error comes back as the same
    WorkloadError the export would have raised here."""
    import multiprocessing
    import traceback

    reader, writer = multiprocessing.Pipe(duplex=False)

    def run() -> None:
        try:
            export()
            writer.send(None)
        except WorkloadError as exc:
            writer.send((exc.where, exc.message, exc.tb))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, never lost
            writer.send(("export", f"export in a child process failed: {one_line(exc)}", traceback.format_exc()))

    child = multiprocessing.get_context("fork").Process(target=run, daemon=True)
    child.start()
    writer.close()
    try:
        got = reader.recv()
    except EOFError:
        got = ("export", "export in a child process died without a result", "")
    child.join()
    reader.close()
    if got is None and child.exitcode == 0:
        return
    stage, message, detail = got or ("export", f"export in a child process exited with {child.exitcode}", "")
    raise WorkloadError(stage, message, detail)


def _axes_from_json(axes: Mapping[str, Any]) -> dict[str, Any]:
    """dynamic_axes as torch.onnx takes them: a request travels as JSON, which turns the axis
    numbers of {"x": {0: "batch"}} into strings that the TorchScript exporter refuses."""
    out: dict[str, Any] = {}
    for name, dims in axes.items():
        if isinstance(dims, Mapping):
            out[name] = {int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k: v for k, v in dims.items()}
        else:
            out[name] = dims
    return out


def dynamo_dynamic_shapes(
    module: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    dynamic: list[dict[int, str]],
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


def export_for_inference(target: Target, schedule: Schedule, options: ProbeOptions, path: Path) -> bool:
    """The inference stage's export of one target: the varying dims dynamic, the schedule's
    largest step as the example, then the fixers' passes. False when the target gets no call
    at that step (nothing to export)."""
    ex = export_step_index(schedule)
    calls = target.calls(ex, schedule.steps[ex])
    if not calls:
        return False
    args, kwargs = calls[0]
    export_onnx(target, args, kwargs, path, options, dynamic=varying_dims(target, schedule))
    post_export(path, options, [tuple(t.shape) for t in tensor_leaves((args, kwargs))])
    return True


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
