"""ONNX Runtime as the probes use it: the session with a fixer's options, run options, and feeds.

Feeds are numpy arrays named as the exported graph names its inputs; InputAdapter applies what
fixers do to inputs on their way to the runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bisector.probe.inputs import Args, tensor_leaves
from bisector.probe.loading import WorkloadError, one_line, user_traceback
from bisector.probe.targets import Target, who
from bisector.probe.types import ProbeOptions


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
        providers = (
            [("CPUExecutionProvider", dict(options.provider_options))]
            if options.provider_options
            else ["CPUExecutionProvider"]
        )
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=providers)
    except Exception as exc:  # noqa: BLE001
        raise WorkloadError(
            "session", f"ONNX Runtime could not load the exported model: {one_line(exc)}", user_traceback(exc)
        ) from None


def make_run_options(options: ProbeOptions) -> Any:
    if not options.run_options:
        return None
    import onnxruntime as ort

    ro = ort.RunOptions()
    for key, value in options.run_options.items():
        ro.add_run_config_entry(key, str(value))
    return ro


def make_feed(session: Any, target: Target, args: Args) -> dict[str, Any]:
    import torch

    arrays = []
    for t in tensor_leaves(args):
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            raise WorkloadError(
                "run", "bfloat16 inputs cannot be fed to ONNX Runtime from numpy; use float16 or float32"
            )
        arrays.append(t.numpy())
    names = [i.name for i in session.get_inputs()]
    ours = target.input_names or []
    if ours and len(ours) == len(arrays) and set(names) <= set(ours):
        by_name = dict(zip(ours, arrays))
        return {n: by_name[n] for n in names}
    if len(names) != len(arrays):
        raise WorkloadError(
            "run",
            f"the exported graph of {who(target)} takes {len(names)} inputs ({', '.join(names)}) "
            f"but the model got {len(arrays)} tensors",
        )
    return dict(zip(names, arrays))


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
