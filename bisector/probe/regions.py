"""Inside a child: record every region's inputs (a capture probe, ProbeKind.CAPTURE) and replay them (targets).

Capture: forward pre-hooks (``with_kwargs=True``) on every module record each call's args and
kwargs, detached copies on the CPU; the root's inputs are the generated ones. One file per input
shape holds all regions, so tensors shared between a parent and its first child are stored once.
A region whose inputs cannot be saved (an unpicklable argument) or whose module takes no hooks (a
scripted submodule) is listed as not capturable; the search then goes on in its children.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import os
import time
from pathlib import Path
from typing import Any

from bisector.model.capture import VARIANTS_BYTES, VARIANTS_S, capture_file, dims_key, input_seed_index, variant_indices
from bisector.probe.inputs import Args, InputFactory
from bisector.probe.loading import WorkloadError, one_line, user_traceback
from bisector.probe.types import ProbeRequest


def _clone(tree: Any, device: str | None = None) -> Any:
    import torch
    from torch.utils import _pytree as pytree

    def one(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            t = x.detach()
            t = t.to(device) if device else t.cpu()
            return t.clone()
        return x

    return pytree.tree_map(one, tree)


# -- the module tree ------------------------------------------------------------------------------

_code_hashes: dict[type, str] = {}


def _code_hash(module: Any) -> str:
    cls = type(module)
    if cls not in _code_hashes:
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            source = getattr(module, "code", "") if hasattr(module, "code") else cls.__qualname__
        _code_hashes[cls] = hashlib.sha1(f"{cls.__module__}.{cls.__qualname__}\n{source}".encode()).hexdigest()[:16]
    return _code_hashes[cls]


def _weights_hash(module: Any) -> tuple[str, int]:
    import torch

    h = hashlib.sha1()
    count = 0
    for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
        if t is None:
            continue
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        flat = t.detach().reshape(-1).contiguous()
        if flat.numel():
            h.update(memoryview(flat.cpu().view(torch.uint8).numpy()))
        count += t.numel() if isinstance(t, torch.nn.Parameter) else 0
    return h.hexdigest()[:16], count


def module_tree(model: Any, called: set[str] | None = None, capturable: set[str] | None = None) -> list[dict[str, Any]]:
    modules = dict(model.named_modules())
    rows: dict[str, dict[str, Any]] = {}
    for path, module in modules.items():
        children = []
        for name, child in module.named_children():
            cpath = f"{path}.{name}" if path else name
            if cpath in modules and modules[cpath] is child:
                children.append(cpath)
        whash, params = _weights_hash(module)
        rows[path] = {
            "path": path,
            "type": f"{type(module).__module__}.{type(module).__qualname__}",
            "children": children,
            "params": params,
            "code_hash": _code_hash(module),
            "weights_hash": whash,
            "called": True if called is None else (path in called or path == ""),
            "capturable": True if capturable is None else (path in capturable or path == ""),
        }
    for path in sorted(rows, key=lambda p: -p.count(".") if p else 1):  # children before parents
        r = rows[path]
        h = hashlib.sha1(f"{r['code_hash']}{r['weights_hash']}".encode())
        for c in r["children"]:
            h.update(rows[c]["subtree_hash"].encode())
        r["subtree_hash"] = h.hexdigest()[:16]
    return [rows[p] for p in modules]


# -- capture --------------------------------------------------------------------------------------


def run_capture(model: Any, req: ProbeRequest, factory: InputFactory, folder: Path) -> dict[str, Any]:
    """Run the model once per shape in req.schedule, saving every region's calls."""
    folder.mkdir(parents=True, exist_ok=True)
    modules = dict(model.named_modules())
    recorder = _Recorder(model, factory, modules)
    sizes: dict[str, int] = {}
    # A shape listed n times gets n distinct inputs (capture_schedule): variant 0 from the shape's
    # own seed index, as every probe makes it, the others from the indices after it.
    wanted: dict[str, tuple[dict[str, int], int]] = {}
    for step in req.schedule.steps:
        key = dims_key(step.dims)
        wanted[key] = (dict(step.dims), wanted.get(key, (step.dims, 0))[1] + 1)
    started = time.perf_counter()
    try:
        for dims, n in wanted.values():
            target = capture_file(folder, dims)
            if not target.exists():
                sizes[dims_key(dims)] = _capture_shape(recorder, target, dims, n, started)
    finally:
        recorder.detach()
    capturable = {p for p in modules if p not in recorder.unsaved}
    return {
        "tree": module_tree(model, called=recorder.called if recorder.called else None, capturable=capturable),
        "unsaved": recorder.unsaved,
        "bytes": sizes,
    }


def _capture_shape(recorder: _Recorder, target: Path, dims: dict[str, int], n: int, started: float) -> int:
    """Record one shape's calls (and up to n - 1 variants, within the byte and time budgets) into
    target, written atomically; returns its size."""
    seed_index = input_seed_index(dims)
    calls = recorder.record(dims, seed_index)
    payload: dict[str, Any] = {"dims": dims, "calls": calls}
    data = recorder.saved(payload, calls)
    variants: list[dict[str, list[Args]]] = []
    total = len(data)
    for v in range(1, n):
        if total > VARIANTS_BYTES or time.perf_counter() - started > VARIANTS_S:
            break  # a large model's recordings, or a slow forward: fewer variants (one, as before)
        more = recorder.record(dims, seed_index + v)
        for path in list(more):
            if path not in calls:
                more.pop(path)
        total += len(recorder.saved(more, more))
        variants.append(more)
    if variants:
        payload["variants"] = variants
        data = recorder.saved(payload, calls)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return len(data)


class _Recorder:
    """Forward pre-hooks on every submodule recording each call's inputs; which regions were
    called, and which cannot be saved (no hooks, unpicklable inputs) and why."""

    def __init__(self, model: Any, factory: InputFactory, modules: dict[str, Any]) -> None:
        self.model = model
        self.factory = factory
        self.recorded: dict[str, list[Args]] = {}
        self.called: set[str] = set()
        self.unsaved: dict[str, str] = {}
        self.handles: list[Any] = []
        for path, module in modules.items():
            if path == "":
                continue
            try:
                self.handles.append(module.register_forward_pre_hook(self._hook(path), with_kwargs=True))
            except Exception as exc:  # noqa: BLE001 - scripted modules take no hooks
                self.unsaved[path] = one_line(exc)

    def _hook(self, path: str):
        recorded = self.recorded

        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            recorded.setdefault(path, []).append((_clone(args), _clone(kwargs)))

        return hook

    def detach(self) -> None:
        for h in self.handles:
            h.remove()

    def record(self, dims: dict[str, int], index: int) -> dict[str, list[Args]]:
        """One forward on the index-th input of this shape: every saveable region's calls."""
        import torch

        self.recorded.clear()
        args, kwargs = self.factory.make(index, dims)
        try:
            with torch.no_grad():
                self.model(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the user's forward
            raise WorkloadError(
                "forward",
                f"forward of the model raised {one_line(exc)} while recording inputs",
                user_traceback(exc),
            ) from None
        calls = {"": [(_clone(args), _clone(kwargs))], **self.recorded}
        self.called.update(calls)
        for path in list(calls):
            if path in self.unsaved:
                calls.pop(path)
        return calls

    def saved(self, obj: Any, calls: dict[str, list[Args]]) -> bytes:
        """obj as torch.save writes it; the regions whose inputs cannot be pickled are dropped
        from calls (and obj) and noted."""
        import torch

        buf = io.BytesIO()
        try:
            torch.save(obj, buf)
        except Exception:  # noqa: BLE001 - find the regions whose inputs cannot be pickled
            for path in list(calls):
                try:
                    torch.save(calls[path], io.BytesIO())
                except Exception as exc:  # noqa: BLE001
                    self.unsaved[path] = f"its inputs cannot be saved: {one_line(exc)}"
                    calls.pop(path)
            buf = io.BytesIO()
            torch.save(obj, buf)
        return buf.getvalue()


# -- replay ---------------------------------------------------------------------------------------


def region_targets(model: Any, req: ProbeRequest, factory: InputFactory) -> list[Any]:
    """Targets for the regions of req, each replaying its recorded calls for the step's shape."""
    import torch

    from bisector.probe.targets import Target

    if not req.capture:
        raise WorkloadError("inputs", "probing a region needs its recorded inputs (a capture folder)")
    modules = dict(model.named_modules())
    for path in req.regions:
        if path not in modules:
            raise WorkloadError("load", f"the model has no submodule {path!r}")
    wanted = set(req.regions)
    by_key: dict[str, list[dict[str, list[Args]]]] = {}  # per shape, per recorded variant
    for step in req.schedule.steps:
        key = dims_key(step.dims)
        if key in by_key:
            continue
        f = capture_file(req.capture, step.dims)
        if not f.exists():
            raise WorkloadError("inputs", f"no recorded inputs for shape {dict(step.dims)}")
        payload = torch.load(f, map_location="cpu", weights_only=False)
        by_key[key] = [
            {p: calls.get(p, []) for p in wanted} for calls in [payload["calls"], *payload.get("variants", [])]
        ]
    never = [p for p in req.regions if not any(by_key[k][0][p] for k in by_key)]
    if never:
        raise WorkloadError(
            "inputs",
            f"no recorded calls for {', '.join(repr(p) for p in never)} (not called, or its inputs could not be saved)",
        )
    device = req.options.device if req.options.device not in ("auto", "cpu") else None
    if device is None and next(iter(p.device.type for p in model.parameters()), "cpu") == "cuda":
        device = "cuda"

    # The n-th run of a shape replays the n-th recorded variant (cycling): distinct inputs at
    # every step, as the whole model gets them.
    variant = variant_indices(req.schedule)

    targets = []
    for path in req.regions:

        def calls_for(i: int, step: Any, path: str = path) -> list[Args]:
            recorded = by_key[dims_key(step.dims)]
            chosen = recorded[variant[i] % len(recorded)] if i < len(variant) else recorded[0]
            calls = chosen.get(path) or recorded[0][path]
            return [_clone(c, device) if device else _clone(c) for c in calls]

        targets.append(Target(name=path, module=modules[path], calls=calls_for))
    return targets


def group_target(targets: list[Any]) -> Any:
    """Several regions as one module, for the export and inference stages: one export (one
    session) per step for the whole group instead of one per region. The exporter's fixed cost
    and its own per-export residue are then paid once, as in the control run."""
    import torch

    from bisector.probe.targets import Target

    class BisectorGroup(torch.nn.Module):
        def __init__(self, modules: list[Any]) -> None:
            super().__init__()
            for i, m in enumerate(modules):
                self.add_module(f"r{i}", m)
            self.n = len(modules)

        def forward(self, calls: tuple) -> tuple:
            return tuple(getattr(self, f"r{i}")(*a, **k) for i, (a, k) in enumerate(calls))

    group = BisectorGroup([t.module for t in targets])

    def calls(i: int, step: Any) -> list[Args]:
        per_region = []
        for t in targets:
            c = t.calls(i, step)
            if not c:
                return []
            per_region.append(tuple(c[0]))
        return [((tuple(per_region),), {})]

    return Target(name="+".join(t.name for t in targets), module=group, calls=calls)
