"""What crosses the process boundary: probe requests and results, as JSON-safe data.

A probe never raises across the boundary: a Python exception in the user's code comes back as
``ProbeFailed`` (with the tail of the traceback), a dead child as ``ProbeCrashed`` (signal, exit
code, last lines of stderr), a hung one as ``ProbeTimedOut``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Union

from bisector.curve import MemoryCurve
from bisector.schedule import Schedule
from bisector.choices import EXPORTERS, STAGES  # noqa: F401 - re-exported: the probe side names them here
from bisector.spec import InputPlan, ModelSpec

CAPTURE = "capture"  # not a measurement: records the module tree and every region's inputs
EQUIVALENCE = "equivalence"  # not a measurement: compares the outputs of two configurations


@dataclass(frozen=True)
class ProbeOptions:
    """How a stage is run. Fixers change these (export kwargs, ONNX Runtime options)."""

    exporter: str | None = None  # None: torch's own default
    device: str = "cpu"  # cpu | cuda
    keep_autograd: bool = False
    tracemalloc: bool = False
    threads: int | None = None  # torch intra-op threads in the child
    export_kwargs: Mapping[str, Any] = field(default_factory=dict)
    session_options: Mapping[str, Any] = field(default_factory=dict)
    provider_options: Mapping[str, Any] = field(default_factory=dict)
    run_options: Mapping[str, Any] = field(default_factory=dict)
    input_transform: str | None = None  # "round:16": pad varying dims up to a multiple, crop outputs
    post_export: tuple[str, ...] = ()  # "onnxsim", "onnxsim-fixed": passes on the exported graph
    warmup: str | None = None  # "largest": run the session once at the largest input before serving
    # A traced probe: tracemalloc from the repeat phase on, growth split by owner (owners.py).
    # Frames per allocation: each costs time in every allocation (a dynamo export of a tiny GPT-2
    # took 2.4 s untraced, ~13 s at one frame, minutes at eight).
    owners: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "exporter": self.exporter,
            "device": self.device,
            "keep_autograd": self.keep_autograd,
            "tracemalloc": self.tracemalloc,
            "threads": self.threads,
            "export_kwargs": dict(self.export_kwargs),
            "session_options": dict(self.session_options),
            "provider_options": dict(self.provider_options),
            "run_options": dict(self.run_options),
            "input_transform": self.input_transform,
            "post_export": list(self.post_export),
            "warmup": self.warmup,
            "owners": self.owners,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ProbeOptions":
        out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
        out["post_export"] = tuple(out.get("post_export") or ())
        return cls(**out)

    def with_overrides(self, overrides: Mapping[str, Any]) -> "ProbeOptions":
        """These options with a fixer's overrides merged in (see merge_overrides)."""
        merged = merge_overrides({k: getattr(self, k) for k in overrides}, overrides)
        if "post_export" in merged:
            merged["post_export"] = tuple(merged["post_export"])
        return replace(self, **merged)


def merge_overrides(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Probe overrides b on top of a: mappings merged key by key, post_export passes joined
    (each once, in order), anything else replaced."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in a.items()}
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = {**out[k], **v}
        elif k == "post_export" and out.get(k) is not None:
            out[k] = list(dict.fromkeys(list(out[k]) + list(v)))
        else:
            out[k] = v
    return out


@dataclass(frozen=True)
class ProbeRequest:
    model: ModelSpec
    plan: InputPlan
    stage: str
    schedule: Schedule
    options: ProbeOptions = ProbeOptions()
    control: bool = False  # run the trivial control module with the same inputs instead
    regions: tuple[str, ...] = ("",)  # dotted module paths; "" is the whole model
    capture: str | None = None  # file of recorded per-region inputs (find)
    label: str = ""
    # The equivalence stage compares this model and options against another configuration.
    other: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model.to_json(),
            "plan": self.plan.to_json(),
            "stage": self.stage,
            "schedule": self.schedule.to_json(),
            "options": self.options.to_json(),
            "control": self.control,
            "regions": list(self.regions),
            "capture": self.capture,
            "label": self.label,
            "other": dict(self.other) if self.other else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ProbeRequest":
        return cls(
            model=ModelSpec.from_json(data["model"]),
            plan=InputPlan.from_json(data["plan"]),
            stage=data["stage"],
            schedule=Schedule.from_json(data["schedule"]),
            options=ProbeOptions.from_json(data["options"]),
            control=bool(data.get("control")),
            regions=tuple(data.get("regions") or ("",)),
            capture=data.get("capture"),
            label=data.get("label", ""),
            other=data.get("other"),
        )

    def with_(self, **changes: Any) -> "ProbeRequest":
        return replace(self, **changes)

    def key(self) -> str:
        """A stable hash of everything that decides what this probe measures (not its label)."""
        data = self.to_json()
        data.pop("label", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class ProbeOk:
    curve: MemoryCurve
    wall_s: float
    kind: str = "ok"
    data: Mapping[str, Any] = field(default_factory=dict)  # what a non-measuring probe returns (capture)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "curve": self.curve.to_json(), "wall_s": self.wall_s, "data": dict(self.data)}


@dataclass(frozen=True)
class ProbeFailed:
    """The workload raised: where ("load", "inputs", "forward", "export", "session", "run")."""

    where: str
    message: str
    traceback: str = ""
    wall_s: float = 0.0
    kind: str = "failed"
    probe_dir: str = ""  # the probe's folder (request, stderr), kept under the run directory

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "where": self.where, "message": self.message, "traceback": self.traceback, "wall_s": self.wall_s,
                "probe_dir": self.probe_dir}


@dataclass(frozen=True)
class ProbeCrashed:
    """The child died: by a signal, a non-zero exit, or killed at the memory cap."""

    reason: str  # "signal" | "exit" | "memory-cap" | "interrupted" (bisector itself was stopped)
    signal: str | None
    exit_code: int | None
    tail: str
    peak_rss: int | None = None
    wall_s: float = 0.0
    kind: str = "crashed"
    probe_dir: str = ""  # the probe's folder (request, stderr), kept under the run directory

    def describe(self) -> str:
        if self.reason == "memory-cap":
            # The probe's process tree: its own RSS plus what any process it started holds.
            return f"killed at the memory cap (RSS reached {self.peak_rss or 0:,} bytes, with any processes it started)"
        if self.reason == "interrupted":
            return "stopped: bisector was interrupted"
        if self.signal:
            hint = " (the kernel's OOM killer sends this)" if self.signal == "SIGKILL" else ""
            return f"killed by {self.signal}{hint}"
        return f"exited with code {self.exit_code}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "reason": self.reason, "signal": self.signal, "exit_code": self.exit_code,
            "tail": self.tail, "peak_rss": self.peak_rss, "wall_s": self.wall_s, "describe": self.describe(),
            "probe_dir": self.probe_dir,
        }


@dataclass(frozen=True)
class ProbeTimedOut:
    timeout_s: float
    tail: str
    wall_s: float = 0.0
    kind: str = "timeout"
    probe_dir: str = ""

    def describe(self) -> str:
        return f"did not finish within {self.timeout_s:g} s and was killed"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "timeout_s": self.timeout_s, "tail": self.tail, "wall_s": self.wall_s, "describe": self.describe(),
                "probe_dir": self.probe_dir}


ProbeResult = Union[ProbeOk, ProbeFailed, ProbeCrashed, ProbeTimedOut]


def result_from_json(data: Mapping[str, Any]) -> ProbeResult:
    kind = data.get("kind")
    if kind == "ok":
        return ProbeOk(curve=MemoryCurve.from_json(data["curve"]), wall_s=float(data.get("wall_s", 0.0)), data=dict(data.get("data") or {}))
    if kind == "failed":
        return ProbeFailed(where=data["where"], message=data["message"], traceback=data.get("traceback", ""), wall_s=float(data.get("wall_s", 0.0)),
                           probe_dir=data.get("probe_dir", ""))
    if kind == "crashed":
        return ProbeCrashed(
            reason=data["reason"], signal=data.get("signal"), exit_code=data.get("exit_code"),
            tail=data.get("tail", ""), peak_rss=data.get("peak_rss"), wall_s=float(data.get("wall_s", 0.0)),
            probe_dir=data.get("probe_dir", ""),
        )
    if kind == "timeout":
        return ProbeTimedOut(timeout_s=float(data["timeout_s"]), tail=data.get("tail", ""), wall_s=float(data.get("wall_s", 0.0)),
                             probe_dir=data.get("probe_dir", ""))
    raise ValueError(f"unknown probe result kind {kind!r}")
