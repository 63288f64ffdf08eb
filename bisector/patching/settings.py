"""The export and runtime settings gathered from kept fixes; the exporter a call without
``dynamo=`` uses; and which axes of the plan's inputs vary. Stdlib only: the probe imports it too."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# torch.onnx.export's own default since torch 2.9: what an export call without dynamo= uses. Defined
# once in choices.py (the fixers read it there); the patch writer, repair's fix targets and the
# probe (installed_default_exporter, when the installed torch agrees) name it here.
from bisector.model.choices import DEFAULT_EXPORTER  # noqa: F401


def installed_default_exporter() -> str:
    """The exporter the installed torch uses for an export call without dynamo=: DEFAULT_EXPORTER
    from torch 2.9 on, the TorchScript-based one before."""

    import torch  # noqa: PLC0415 - torch only when the probe asks (the parent never imports it)

    param = inspect.signature(torch.onnx.export).parameters.get("dynamo")
    return DEFAULT_EXPORTER if param is not None and param.default is True else "torchscript"


@dataclass(frozen=True)
class Settings:
    exporter: str | None = None
    export_kwargs: Mapping[str, Any] = None  # type: ignore[assignment]
    bounded_dims: Mapping[str, Sequence[int]] = None  # type: ignore[assignment]
    onnxsim: bool = False
    session_options: Mapping[str, Any] = None  # type: ignore[assignment]
    provider_options: Mapping[str, Any] = None  # type: ignore[assignment]
    run_options: Mapping[str, Any] = None  # type: ignore[assignment]
    warmup_largest: bool = False
    round_multiple: int = 0
    symbolics: tuple[str, ...] = ()  # operators given a symbolic for the TorchScript exporter
    export_in_child: str = ""  # each export in a child process; what it works around (upstream bug)

    @classmethod
    def from_probes(cls, probes: Iterable[Mapping[str, Any]]) -> Settings:
        exporter = None
        export_kwargs: dict[str, Any] = {}
        session: dict[str, Any] = {}
        provider: dict[str, Any] = {}
        run: dict[str, Any] = {}
        bounded: dict[str, Any] = {}
        symbolics: list[str] = []
        onnxsim = warm = False
        multiple = 0
        child = ""
        for p in probes:
            exporter = p.get("exporter", exporter)
            child = str(p.get("export_in_child") or child)
            ek = dict(p.get("export_kwargs") or {})
            bounded.update(ek.pop("bounded_dims", {}) or {})
            symbolics += [op for op in ek.pop("symbolics", ()) or () if op not in symbolics]
            export_kwargs.update(ek)
            session.update(p.get("session_options") or {})
            provider.update(p.get("provider_options") or {})
            run.update(p.get("run_options") or {})
            onnxsim = onnxsim or any(str(x).startswith("onnxsim") for x in p.get("post_export") or ())
            warm = warm or p.get("warmup") == "largest"
            t = p.get("input_transform") or ""
            if t.startswith("round:"):
                multiple = int(t.split(":", 1)[1])
        return cls(
            exporter, export_kwargs, bounded, onnxsim, session, provider, run, warm, multiple, tuple(symbolics), child
        )

    @property
    def export_related(self) -> bool:
        return bool(
            self.exporter
            or self.export_kwargs
            or self.bounded_dims
            or self.onnxsim
            or self.symbolics
            or self.export_in_child
        )

    @property
    def runtime_related(self) -> bool:
        # bounded dims count too: the serving code gets the guard that refuses out-of-range sizes
        return bool(
            self.session_options
            or self.provider_options
            or self.run_options
            or self.warmup_largest
            or self.round_multiple
            or self.bounded_dims
        )


def varying_axes(plan: Any) -> list[dict[int, str]]:
    """Per input of the plan, in order: axis -> symbol for each axis whose symbol has a range (not
    one size). The one definition of the dynamic dims: the probe exports these axes dynamic, the
    patches make them dynamic_shapes/dynamic_axes, pad them and guard them. [] when the model
    file's hook builds the inputs (no symbols to go by)."""
    if plan is None or plan.use_hook:
        return []
    varying = set(plan.dynamic_symbols)
    return [{i: d for i, d in enumerate(spec.dims) if isinstance(d, str) and d in varying} for spec in plan.inputs]


def dynamic_dims_by_input(plan: Any) -> dict[str, dict[int, str]]:
    """varying_axes by input name, inputs without one left out: what the scripts' helpers read."""
    inputs = plan.inputs if plan is not None else ()
    return {spec.name: axes for spec, axes in zip(inputs, varying_axes(plan)) if axes}


def largest_sizes(plan: Any, multiple: int = 0) -> list[dict[int, int]]:
    """Per input position, the largest size of each varying axis (the declared ranges' maxima)."""
    if plan is None or plan.use_hook:
        return []
    out = []
    for spec in plan.inputs:
        sizes = {}
        for i, d in enumerate(spec.dims):
            if isinstance(d, str):
                n = int(plan.dims[d][1])
                sizes[i] = n + (-n) % multiple if multiple else n
        out.append(sizes)
    return out
