"""Inside a child: do two configurations of a model give the same outputs?

The request's own model and options are the original; ``request.equivalence`` (an
EquivalenceRequest) names the candidate (another model file, for source edits, and/or other
options) and how to compare:
- "eager": both modules' forward on the same inputs;
- "onnx": each exported with its own options and run by ONNX Runtime with its own session
  options and input transform (padded outputs cropped back); the original's ONNX Runtime
  outputs are the reference, or its eager outputs when the original does not export.
Inputs are the model's generated inputs at the schedule's first distinct shapes.

Eager outputs are compared call after call, as a user runs the model. When they differ, and the
original's own outputs drift (the same input gives another output on a later call: its growth
feeds back into them, as hooks registered per call that each scale the input again) while the
candidate's do not, each shape is compared on the first call of freshly built models instead:
the one moment the original's behaviour is its intended one. The result says so ("mode":
"eager-first-call").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bisector.model.capture import input_seed_index
from bisector.patching.settings import varying_axes
from bisector.probe.inputs import InputFactory, tensor_leaves
from bisector.probe.loading import WorkloadError, build_model, load_namespace
from bisector.probe.reference_outputs import Reference, digest, load, store
from bisector.probe.types import ProbeOptions, ProbeRequest

MAX_SHAPES = 4


def _arrays(tree: Any) -> list[Any]:
    import numpy as np
    import torch
    from torch.utils import _pytree as pytree

    out = []
    for leaf in pytree.tree_leaves(tree):
        if isinstance(leaf, torch.Tensor):
            out.append(leaf.detach().float().cpu().numpy() if leaf.is_floating_point() else leaf.detach().cpu().numpy())
        elif isinstance(leaf, np.ndarray):
            out.append(leaf)
    return out


def compare(reference: list[Any], candidate: list[Any], rtol: float, atol: float) -> dict[str, Any]:
    import numpy as np

    if len(reference) != len(candidate):
        return {
            "equivalent": False,
            "max_abs": None,
            "max_rel": None,
            "why": f"{len(candidate)} outputs instead of {len(reference)}",
        }
    max_abs = max_rel = 0.0
    equivalent = True
    why = ""
    for i, (a, b) in enumerate(zip(reference, candidate)):
        if b.shape != a.shape and b.ndim == a.ndim and all(x >= y for x, y in zip(b.shape, a.shape)):
            b = b[tuple(slice(0, n) for n in a.shape)]  # padded by the candidate: crop back
        if b.shape != a.shape:
            return {
                "equivalent": False,
                "max_abs": None,
                "max_rel": None,
                "why": f"output {i} has shape {b.shape} instead of {a.shape}",
            }
        a64, b64 = a.astype("float64"), b.astype("float64")
        diff = np.abs(a64 - b64)
        if diff.size:
            max_abs = max(max_abs, float(diff.max()))
            max_rel = max(max_rel, float((diff / (np.abs(a64) + 1e-12)).max()))
            if not np.allclose(b64, a64, rtol=rtol, atol=atol):
                equivalent = False
                why = why or f"output {i} differs by up to {float(diff.max()):.3g}"
    return {"equivalent": equivalent, "max_abs": max_abs, "max_rel": max_rel, "why": why}


@dataclass(frozen=True)
class _Pair:
    """The original and the candidate, built, and the inputs both run on."""

    req: ProbeRequest
    model_a: Any
    namespace_a: Any
    model_b: Any
    namespace_b: Any
    device: str
    factory_a: InputFactory
    inputs: list[tuple[Any, Any]]  # (args, kwargs) at each shape checked
    shapes: int  # how many shapes are checked

    @property
    def same_model(self) -> bool:  # the candidate differs in its options only
        return self.req.equivalence is not None and self.req.equivalence.model == self.req.model


def run_equivalence(req: ProbeRequest, model_a: Any, namespace_a: Any, device: str, workdir: Path) -> dict[str, Any]:
    if req.equivalence is None:
        raise ValueError("an equivalence probe without an EquivalenceRequest")
    model_b, namespace_b = _candidate(req, model_a, namespace_a, device)
    factory_a = InputFactory(req.plan, namespace_a, device, req.schedule.seed)
    seen: dict[tuple, dict[str, int]] = {}
    for step in req.schedule.steps:
        seen.setdefault(step.key(), dict(step.dims))
    shapes = list(seen.values())[:MAX_SHAPES]
    inputs = [factory_a.make(input_seed_index(d), d) for d in shapes]
    pair = _Pair(req, model_a, namespace_a, model_b, namespace_b, device, factory_a, inputs, len(shapes))
    if req.equivalence.mode == "eager":
        return _compare_eager(pair)
    return _compare_onnx(pair, workdir)


def _candidate(req: ProbeRequest, model_a: Any, namespace_a: Any, device: str) -> tuple[Any, Any]:
    """The candidate's model and namespace: the original's own when only the options differ."""
    import torch

    assert req.equivalence is not None
    spec_b = req.equivalence.model
    if spec_b == req.model:
        return model_a, namespace_a
    namespace_b = load_namespace(spec_b)
    torch.manual_seed(req.schedule.seed)  # built as the original was: same random weights
    model_b = build_model(spec_b, namespace_b)
    try:
        # An edit may move where weights are made (or draw randomness differently): the
        # comparison is of code, so the original's weights are used wherever names match.
        model_b.load_state_dict(model_a.state_dict(), strict=False)
    except Exception:  # noqa: BLE001 - shapes changed by the edit: keep the seeded weights
        pass
    model_b.eval()
    if device != "cpu":
        model_b.to(device)
    return model_b, namespace_b


def _compare_eager(pair: _Pair) -> dict[str, Any]:
    """Both forwards call after call; when they differ and only the original's outputs drift, each
    shape's first call of freshly built models instead (see the module's doc)."""
    import torch

    assert pair.req.equivalence is not None
    rtol, atol = pair.req.equivalence.rtol, pair.req.equivalence.atol
    model_a, model_b, inputs = pair.model_a, pair.model_b, pair.inputs
    results = []
    first_a: list[list[Any]] = []
    first_b: list[list[Any]] = []
    with torch.no_grad():
        for args, kwargs in inputs:
            first_a.append(_arrays(model_a(*args, **kwargs)))
            first_b.append(_arrays(model_b(*args, **kwargs)))
            results.append(compare(first_a[-1], first_b[-1], rtol, atol))
    summary = _summary(results, pair.shapes, "eager")
    if summary["equivalent"] or pair.same_model or not inputs:
        return summary
    with torch.no_grad():
        args, kwargs = inputs[0]
        drifts_a = not compare(first_a[0], _arrays(model_a(*args, **kwargs)), rtol, atol)["equivalent"]
        drifts_b = not compare(first_b[0], _arrays(model_b(*args, **kwargs)), rtol, atol)["equivalent"]
    if not drifts_a or drifts_b:
        return summary
    return _first_calls(pair, summary)


def _first_calls(pair: _Pair, summary: dict[str, Any]) -> dict[str, Any]:
    """Each shape compared on the first call of freshly built models; the call-after-call summary
    stands when they differ there too."""
    import torch

    req = pair.req
    assert req.equivalence is not None
    rtol, atol = req.equivalence.rtol, req.equivalence.atol
    fresh = []
    for args, kwargs in pair.inputs:
        a = _fresh(req.model, pair.namespace_a, req.schedule.seed, pair.device)
        b = _fresh(req.equivalence.model, pair.namespace_b, req.schedule.seed, pair.device, weights=a)
        with torch.no_grad():
            fresh.append(compare(_arrays(a(*args, **kwargs)), _arrays(b(*args, **kwargs)), rtol, atol))
    first = _summary(fresh, pair.shapes, "eager-first-call")
    if not first["equivalent"]:
        return summary
    return {
        **first,
        "drift": (
            f"the original's outputs drift call over call ({summary['why']} by its call {len(pair.inputs)}), "
            "the candidate's do not: compared on each shape's first call"
        ),
    }


def _compare_onnx(pair: _Pair, workdir: Path) -> dict[str, Any]:
    """Each exported with its own options and run by ONNX Runtime; the original's eager outputs
    are the reference when it does not export. The original's outputs come from the run's store
    when an earlier candidate's probe kept them (reference_outputs.py); a candidate that changes
    neither the model nor what reaches the exporter runs the original's exported file."""
    from bisector.probe.ort import make_feed

    req = pair.req
    assert req.equivalence is not None
    rtol, atol = req.equivalence.rtol, req.equivalence.atol
    ref = _reference(pair, workdir)
    same = pair.same_model and export_settings(req.options) == export_settings(req.equivalence.options)
    b = _onnx_session(pair, pair.model_b, req.equivalence.options, "b", workdir, ref.exported if same else None)
    assert b is not None
    session, adapter, target = b
    results = []
    for (args, kwargs), expected in zip(pair.inputs, ref.outputs):
        got = list(session.run(None, adapter.feed(make_feed(session, target, (args, kwargs)), session)))
        results.append(compare(expected, got, rtol, atol))
    summary = _summary(results, pair.shapes, req.equivalence.mode if ref.onnx else "onnx-vs-eager")
    # How the reference was had ("read": from the store; "stored": made here and kept; "made":
    # made here only), and the exports this probe made: what the store and the shared file save.
    exports = int(ref.how != "read" and ref.onnx) + int(not same or ref.exported is None)
    return {**summary, "reference": ref.how, "exports": exports}


def export_settings(options: ProbeOptions) -> tuple[Any, ...]:
    """What decides the exported file (export_onnx, post_export): two options equal here export
    the same graph from the same model. Not export_in_child (the same export, in another process)
    nor the runtime's options, the input transform or the warm-up (they act on the session)."""
    return (
        options.exporter,
        sorted(options.export_kwargs.items(), key=str),
        options.post_export,
        sorted(options.env.items()),
    )


def _reference(pair: _Pair, workdir: Path) -> Reference:
    """The original's outputs at each input: stored by an earlier probe of this run for the same
    weights and inputs, else exported (or, when it does not export, run eagerly) and stored."""
    import torch

    from bisector.probe.ort import make_feed

    req = pair.req
    assert req.equivalence is not None
    expected = digest(pair.model_a, pair.inputs) if req.equivalence.reference else ""
    stored = load(req.equivalence.reference, expected)
    if stored is not None:
        return stored  # how="read"
    a = _onnx_session(pair, pair.model_a, req.options, "a", workdir)
    outputs = []
    for args, kwargs in pair.inputs:
        if a is not None:
            session, adapter, target = a
            outputs.append(list(session.run(None, adapter.feed(make_feed(session, target, (args, kwargs)), session))))
        else:
            with torch.no_grad():
                outputs.append(_arrays(pair.model_a(*args, **kwargs)))
    ref = Reference(outputs=outputs, onnx=a is not None, exported=workdir / "equivalence_a.onnx" if a else None)
    kept = store(req.equivalence.reference, expected, ref)
    return replace(ref, how="stored" if kept else "made")


def _onnx_session(
    pair: _Pair, model: Any, options: ProbeOptions, tag: str, workdir: Path, exported: Path | None = None
) -> tuple[Any, Any, Any] | None:
    """model exported with options at the largest inputs (or the file already exported with the
    same settings: exported), and its ONNX Runtime session, input adapter and target; None when
    the original ("a") does not export or its graph does not load."""
    from bisector.probe.export import export_onnx, post_export, varying_dims
    from bisector.probe.ort import InputAdapter, make_session
    from bisector.probe.targets import Target

    req = pair.req
    names = [i.name for i in req.plan.inputs] if not req.plan.use_hook else None
    symbols = None
    if not req.plan.use_hook:
        symbols = varying_axes(req.plan)
    factory_a = pair.factory_a
    target = Target(
        name="",
        module=model,
        calls=lambda i, step: [factory_a.make(input_seed_index(step.dims), step.dims)],
        input_names=names,
        symbols=symbols,
    )
    dims = varying_dims(target, req.schedule)
    args, kwargs = pair.inputs[-1]
    path = exported or workdir / f"equivalence_{tag}.onnx"
    try:
        if exported is None:
            export_onnx(target, args, kwargs, path, options, dynamic=dims)
            post_export(path, options, [tuple(t.shape) for t in tensor_leaves((args, kwargs))])
        session = make_session(path, options, pair.device)
    except WorkloadError:
        if tag == "a":
            return None  # the original does not export, or its graph does not load: compare with eager outputs
        raise
    return session, InputAdapter(options, dims, target), target


def _fresh(spec: Any, namespace: Any, seed: int, device: str, weights: Any = None) -> Any:
    """The model built again as the probe builds it (same seed: same random weights), the
    original's weights loaded where names match (as for the candidate above)."""
    import torch

    torch.manual_seed(seed)
    model = build_model(spec, namespace)
    if weights is not None:
        try:
            model.load_state_dict(weights.state_dict(), strict=False)
        except Exception:  # noqa: BLE001 - shapes changed by the edit: keep the seeded weights
            pass
    model.eval()
    if device != "cpu":
        model.to(device)
    return model


def _summary(results: list[dict[str, Any]], shapes: int, mode: str) -> dict[str, Any]:
    abs_values = [r["max_abs"] for r in results if r["max_abs"] is not None]
    rel_values = [r["max_rel"] for r in results if r["max_rel"] is not None]
    bad = [r["why"] for r in results if not r["equivalent"]]
    return {
        "equivalent": not bad,
        "max_abs_diff": max(abs_values) if abs_values else None,
        "max_rel_diff": max(rel_values) if rel_values else None,
        "shapes_checked": shapes,
        "mode": mode,
        "why": bad[0] if bad else "",
    }
