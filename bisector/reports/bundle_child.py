"""Inside a child process: the parts of a repro bundle that need the user's model and torch.

    python -m bisector.reports.bundle_child BUNDLE_DIR        (reads BUNDLE_DIR/build.json)

Runs the whole model once per input shape with a forward pre-hook on the culprit region (the same
inputs bisector's probes generate: same factory, same seed index), and writes the region's calls
as inputs.npz + inputs.json; for export and inference culprits exports the region to model.onnx,
and writes its op histogram and, for inference, one profiled ONNX Runtime run (profile.json) to
onnx_detail.json; the versions env.txt needs go to child.json. A child, because the user's code
may crash, hang or leak: the CLI process only reads what it wrote.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any


def encode(obj: Any, arrays: dict[str, Any], prefix: str) -> Any:
    """Tensors into the npz (by key), everything else as JSON with its container kind kept."""
    import torch

    if isinstance(obj, torch.Tensor):
        key = f"{prefix}_{len(arrays)}"
        arrays[key] = obj.detach().cpu().numpy()
        return {"t": "tensor", "key": key}
    if isinstance(obj, tuple):
        return {"t": "tuple", "items": [encode(x, arrays, prefix) for x in obj]}
    if isinstance(obj, list):
        return {"t": "list", "items": [encode(x, arrays, prefix) for x in obj]}
    if isinstance(obj, dict):
        return {"t": "dict", "items": {str(k): encode(v, arrays, prefix) for k, v in obj.items()}}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"t": "value", "v": obj}
    raise TypeError(f"an input of type {type(obj).__name__} cannot be written to a bundle")


def record_calls(model: Any, region: str, args: Any, kwargs: Any) -> list[tuple[Any, Any]]:
    """The region's calls during one forward of the whole model (all of them, as the probes replay)."""
    import torch

    if not region:
        return [(tuple(args), dict(kwargs))]
    module = model.get_submodule(region)
    calls: list[tuple[Any, Any]] = []

    def hook(_m: Any, a: tuple, k: dict) -> None:
        from torch.utils import _pytree as pytree

        clone = lambda x: x.detach().clone() if isinstance(x, torch.Tensor) else x  # noqa: E731
        calls.append((pytree.tree_map(clone, a), pytree.tree_map(clone, k)))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        handle.remove()
    return calls


def versions() -> dict[str, Any]:
    from importlib import metadata

    out: dict[str, Any] = {"python": sys.version.split()[0], "platform": sys.platform}
    for dist in (
        "torch",
        "onnx",
        "onnxruntime",
        "onnxruntime-gpu",
        "onnxscript",
        "onnxsim",
        "numpy",
        "psutil",
        "transformers",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        import onnxruntime as ort

        out["ort_providers"] = list(ort.get_available_providers())
    except Exception as exc:  # noqa: BLE001 - a broken install is itself worth reporting
        out["ort_providers"] = f"unavailable: {exc}"
    return out


def build(folder: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from bisector.model.capture import input_seed_index
    from bisector.model.spec import InputPlan, ModelSpec
    from bisector.probe.inputs import InputFactory, tensor_leaves
    from bisector.probe.loading import build_model, load_namespace
    from bisector.probe.types import ProbeOptions

    cfg = json.loads((folder / "build.json").read_text())
    spec = ModelSpec.from_json(cfg["model"])
    plan = InputPlan.from_json(cfg["plan"])
    region = cfg.get("region") or ""
    stage = cfg["stage"]
    torch.manual_seed(int(cfg.get("seed") or 0))
    namespace = load_namespace(spec)
    model = build_model(spec, namespace)
    model.eval()
    factory = InputFactory(plan, namespace, "cpu", int(cfg.get("seed") or 0))
    result: dict[str, Any] = {
        "versions": versions(),
        "region_type": type(model.get_submodule(region) if region else model).__name__,
    }

    arrays: dict[str, Any] = {}
    steps = []
    recorded = []
    for i, step in enumerate(cfg["steps"]):
        args, kwargs = factory.make(input_seed_index(step["dims"]), step["dims"])
        calls = record_calls(model, region, args, kwargs)
        recorded.append(calls)
        steps.append(
            {
                "dims": step["dims"],
                "phase": step["phase"],
                "calls": [[encode(a, arrays, f"s{i}"), encode(k, arrays, f"s{i}")] for a, k in calls],
            }
        )
    np.savez(folder / "inputs.npz", **arrays)
    (folder / "inputs.json").write_text(json.dumps({"steps": steps}, indent=1))

    if stage in ("export", "inference"):
        from bisector.probe.export import export_onnx, resolve_exporter
        from bisector.probe.targets import Target
        from bisector.reports.onnx_detail import op_histogram, profile_run

        detail: dict[str, Any] = {}
        try:
            module = model.get_submodule(region) if region else model
            # The largest shape as the example (torch.export specializes dims of size 1).
            big = max(range(len(recorded)), key=lambda j: sum(int(t.numel()) for t in tensor_leaves(recorded[j][:1])))
            args, kwargs = recorded[big][0]
            leaves = tensor_leaves((args, kwargs))
            dynamic = None
            if stage == "inference":
                shapes = [[tuple(t.shape) for t in tensor_leaves(c[0])] for c in recorded if c]
                dynamic = [
                    {d: f"in{j}_d{d}" for d in range(len(s0)) if len({s[j][d] for s in shapes}) > 1}
                    for j, s0 in enumerate(shapes[0])
                ]
            exporter = resolve_exporter(cfg.get("exporter"))
            options = ProbeOptions(exporter=exporter)
            target = Target(name=region or "<root>", module=module, calls=lambda i, s: [])
            with torch.no_grad():
                export_onnx(target, tuple(args), dict(kwargs), folder / "model.onnx", options, dynamic=dynamic)
            result["exporter"] = exporter
            result["input_names"] = [f"input_{i}" for i in range(len(leaves))] if exporter != "dynamo" else None
            detail["histogram"] = op_histogram(folder / "model.onnx").to_json()
            if stage == "inference":
                import onnxruntime as ort

                sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
                names = [x.name for x in sess.get_inputs()]
                first = next(c for c in recorded if c)[0]
                feed = dict(zip(names, [t.detach().cpu().numpy() for t in tensor_leaves(first)]))
                del sess
                _, summary = profile_run(folder / "model.onnx", feed, folder)
                detail["profile"] = summary.to_json()
                detail["profile_file"] = "profile.json"
        except Exception as exc:  # noqa: BLE001 - the user's export; the bundle is still useful without it
            detail["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        (folder / "onnx_detail.json").write_text(json.dumps(detail, indent=1))
        result["onnx_detail"] = detail
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0])
    try:
        result = build(folder)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as data
        from bisector.probe.loading import WorkloadError

        message = exc.message if isinstance(exc, WorkloadError) else f"{type(exc).__name__}: {exc}"
        result = {"error": message, "traceback": traceback.format_exc()}
    (folder / "child.json").write_text(json.dumps(result, indent=1, default=str))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    raise SystemExit(main())
