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
    """Everything the child makes for one bundle (build.json says what); returns child.json's data."""
    import torch

    from bisector.model.spec import InputPlan, ModelSpec
    from bisector.probe.inputs import InputFactory
    from bisector.probe.loading import build_model, load_namespace

    cfg = json.loads((folder / "build.json").read_text())
    spec = ModelSpec.from_json(cfg["model"])
    region = cfg.get("region") or ""
    torch.manual_seed(int(cfg.get("seed") or 0))
    namespace = load_namespace(spec)
    model = build_model(spec, namespace)
    model.eval()
    factory = InputFactory(InputPlan.from_json(cfg["plan"]), namespace, "cpu", int(cfg.get("seed") or 0))
    result: dict[str, Any] = {
        "versions": versions(),
        "region_type": type(model.get_submodule(region) if region else model).__name__,
    }
    recorded = record_inputs(model, region, factory, cfg["steps"], folder)
    if cfg["stage"] in ("export", "inference"):
        detail: dict[str, Any] = {}
        try:
            module = model.get_submodule(region) if region else model
            export_region(module, cfg, recorded, folder, detail, result)
        except Exception as exc:  # noqa: BLE001 - the user's export; the bundle is still useful without it
            detail["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        (folder / "onnx_detail.json").write_text(json.dumps(detail, indent=1))
        result["onnx_detail"] = detail
    return result


def record_inputs(model: Any, region: str, factory: Any, steps: list[dict[str, Any]], folder: Path) -> list[Any]:
    """Per step (input shape), the region's calls during one forward of the whole model, written as
    inputs.npz (the tensors) and inputs.json (their structure); returns the calls."""
    import numpy as np

    from bisector.model.capture import input_seed_index

    arrays: dict[str, Any] = {}
    written = []
    recorded = []
    for i, step in enumerate(steps):
        args, kwargs = factory.make(input_seed_index(step["dims"]), step["dims"])
        calls = record_calls(model, region, args, kwargs)
        recorded.append(calls)
        written.append(
            {
                "dims": step["dims"],
                "phase": step["phase"],
                "calls": [[encode(a, arrays, f"s{i}"), encode(k, arrays, f"s{i}")] for a, k in calls],
            }
        )
    np.savez(folder / "inputs.npz", **arrays)
    (folder / "inputs.json").write_text(json.dumps({"steps": written}, indent=1))
    return recorded


def export_region(
    module: Any, cfg: dict[str, Any], recorded: list[Any], folder: Path, detail: dict[str, Any], result: dict[str, Any]
) -> None:
    """The region exported to model.onnx with its op histogram; for inference, one profiled ONNX
    Runtime run (profile.json). Fills detail (onnx_detail.json) and result as it goes, so what was
    made before a failure is kept."""
    import torch

    from bisector.probe.export import export_onnx, resolve_exporter
    from bisector.probe.inputs import tensor_leaves
    from bisector.probe.targets import Target
    from bisector.probe.types import ProbeOptions
    from bisector.reports.onnx_detail import op_histogram

    # The largest shape as the example (torch.export specializes dims of size 1).
    big = max(range(len(recorded)), key=lambda j: sum(int(t.numel()) for t in tensor_leaves(recorded[j][:1])))
    args, kwargs = recorded[big][0]
    leaves = tensor_leaves((args, kwargs))
    region, stage = cfg.get("region") or "", cfg["stage"]
    dynamic = None
    if stage == "inference":
        shapes = [[tuple(t.shape) for t in tensor_leaves(c[0])] for c in recorded if c]
        dynamic = [
            {d: f"in{j}_d{d}" for d in range(len(s0)) if len({s[j][d] for s in shapes}) > 1}
            for j, s0 in enumerate(shapes[0])
        ]
    exporter = resolve_exporter(cfg.get("exporter"))
    target = Target(name=region or "<root>", module=module, calls=lambda i, s: [])
    with torch.no_grad():
        export_onnx(
            target, tuple(args), dict(kwargs), folder / "model.onnx", ProbeOptions(exporter=exporter), dynamic=dynamic
        )
    result["exporter"] = exporter
    result["input_names"] = [f"input_{i}" for i in range(len(leaves))] if exporter != "dynamo" else None
    detail["histogram"] = op_histogram(folder / "model.onnx").to_json()
    if stage == "inference":
        detail["profile"] = profile_first_call(recorded, folder)
        detail["profile_file"] = "profile.json"


def profile_first_call(recorded: list[Any], folder: Path) -> dict[str, Any]:
    """One profiled ONNX Runtime run of model.onnx on the first recorded call (profile.json)."""
    import onnxruntime as ort

    from bisector.probe.inputs import tensor_leaves
    from bisector.reports.onnx_detail import profile_run

    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [x.name for x in sess.get_inputs()]
    first = next(c for c in recorded if c)[0]
    feed = dict(zip(names, [t.detach().cpu().numpy() for t in tensor_leaves(first)]))
    del sess
    _, summary = profile_run(folder / "model.onnx", feed, folder)
    return summary.to_json()


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
