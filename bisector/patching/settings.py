"""The export and runtime settings gathered from kept fixes; the exporter a call without
``dynamo=`` uses; and which axes of the plan's inputs vary. Stdlib only: the probe and the fixers
import it too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

# torch.onnx.export's own default since torch 2.9: what an export call without dynamo= uses.
DEFAULT_EXPORTER = "dynamo"


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

    @classmethod
    def from_probes(cls, probes: Iterable[Mapping[str, Any]]) -> "Settings":
        exporter = None
        export_kwargs: dict[str, Any] = {}
        session: dict[str, Any] = {}
        provider: dict[str, Any] = {}
        run: dict[str, Any] = {}
        bounded: dict[str, Any] = {}
        symbolics: list[str] = []
        onnxsim = warm = False
        multiple = 0
        for p in probes:
            exporter = p.get("exporter", exporter)
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
        return cls(exporter, export_kwargs, bounded, onnxsim, session, provider, run, warm, multiple, tuple(symbolics))

    @property
    def export_related(self) -> bool:
        return bool(self.exporter or self.export_kwargs or self.bounded_dims or self.onnxsim or self.symbolics)

    @property
    def runtime_related(self) -> bool:
        # bounded dims count too: the serving code gets the guard that refuses out-of-range sizes
        return bool(self.session_options or self.provider_options or self.run_options or self.warmup_largest
                    or self.round_multiple or self.bounded_dims)


def dynamic_dims_by_input(plan: Any) -> dict[str, dict[int, str]]:
    """Which axes of which input vary (axis -> symbol, for symbols with a range): the only ones
    padding may touch and the guard checks."""
    if plan is None or plan.use_hook:
        return {}
    out = {}
    for spec in plan.inputs:
        axes = {i: d for i, d in enumerate(spec.dims) if isinstance(d, str) and plan.dims[d][0] != plan.dims[d][1]}
        if axes:
            out[spec.name] = axes
    return out


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
