"""What crosses the process boundary: probe requests and results, as JSON-safe data.

A probe never raises across the boundary: a Python exception in the user's code comes back as
``ProbeFailed`` (with the tail of the traceback), a dead child as ``ProbeCrashed`` (signal, exit
code, last lines of stderr), a hung one as ``ProbeTimedOut``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Union

from bisector.common.strenum import StrEnum
from bisector.model.choices import EXPORTERS, STAGES  # noqa: F401 - re-exported: the probe side names them here
from bisector.model.curve import MemoryCurve
from bisector.model.schedule import Schedule
from bisector.model.spec import InputPlan, ModelSpec


class ProbeKind(StrEnum):
    """What a probe does. Only a measurement runs a stage; the others run no stage at all."""

    MEASURE = "measure"  # a stage's memory curve over the schedule
    CAPTURE = "capture"  # records the module tree and every region's inputs (find)
    EQUIVALENCE = "equivalence"  # compares the outputs of two configurations (repair)
    NOOP = "noop"  # the cost of starting a probe, nothing else (bench/probe_overhead.py)
    # The model exported for the inference stage into the file ``exported`` names, once for every
    # whole-model inference probe of a run that exports it alike (lab/exports.py).
    EXPORT_FILE = "export-file"


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
    # A retention probe: what holds the objects the calls leave behind (probe/retention.py).
    retention: bool = False
    # Environment variables the probe sets before the model first runs (a toolchain's own cache
    # turned off, to tell its growth from the model's: lab.py's native twin).
    env: Mapping[str, str] = field(default_factory=dict)
    # Each torch.onnx.export in a forked child process: what the exporter keeps per export goes
    # with the child (a workaround for the toolchain's own leaks). The value says what it works
    # around (the upstream bug, when known); "" is off.
    export_in_child: str = ""

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
            # Only when set: every other probe's request, and so its cache key, stays as it was.
            **({"retention": True} if self.retention else {}),
            # Only when set: a probe with none keeps the keys (and cached results) it had before.
            **({"env": dict(self.env)} if self.env else {}),
            **({"export_in_child": self.export_in_child} if self.export_in_child else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProbeOptions:
        out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
        out["post_export"] = tuple(out.get("post_export") or ())
        return cls(**out)

    def with_overrides(self, overrides: Mapping[str, Any]) -> ProbeOptions:
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
class EquivalenceRequest:
    """The candidate an equivalence probe compares the request's own model and options against
    (probe/equivalence.py), and how: "eager" compares forwards, "onnx" ONNX Runtime outputs."""

    model: ModelSpec  # the candidate's model: another file for source edits, else the same spec
    options: ProbeOptions  # the candidate's probe options (export, runtime, input transform)
    mode: str = "eager"  # eager | onnx
    rtol: float = 1e-3
    atol: float = 1e-4
    # Where the run keeps the original's outputs for every candidate (probe/reference_outputs.py);
    # "": not kept (each probe exports the original itself).
    reference: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model.to_json(),
            "options": self.options.to_json(),
            "mode": self.mode,
            "rtol": self.rtol,
            "atol": self.atol,
            **({"reference": self.reference} if self.reference else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EquivalenceRequest:
        return cls(
            model=ModelSpec.from_json(data["model"]),
            options=ProbeOptions.from_json(data["options"]),
            mode=data.get("mode", "eager"),
            rtol=float(data.get("rtol", 1e-3)),
            atol=float(data.get("atol", 1e-4)),
            reference=str(data.get("reference") or ""),
        )


@dataclass(frozen=True)
class ProbeRequest:
    model: ModelSpec
    plan: InputPlan
    stage: str | None  # one of STAGES for a measurement; None for a probe that runs no stage
    schedule: Schedule
    options: ProbeOptions = ProbeOptions()
    control: bool = False  # run the trivial control module with the same inputs instead
    regions: tuple[str, ...] = ("",)  # dotted module paths; "" is the whole model
    capture: str | None = None  # file of recorded per-region inputs (find)
    label: str = ""
    kind: ProbeKind = ProbeKind.MEASURE
    equivalence: EquivalenceRequest | None = None  # what an equivalence probe compares against
    # An ONNX file the inference stage runs instead of exporting the model itself (or the file an
    # export-file probe writes); "": the probe exports.
    exported: str = ""

    def __post_init__(self) -> None:
        # A stale caller passing "capture" as the stage fails here, not as a KeyError in the child.
        object.__setattr__(self, "kind", ProbeKind(self.kind))
        if self.kind == ProbeKind.MEASURE and self.stage not in STAGES:
            raise ValueError(f"a measurement needs a stage ({', '.join(STAGES)}), not {self.stage!r}")
        if self.kind != ProbeKind.MEASURE and self.stage is not None:
            raise ValueError(f"a {self.kind} probe runs no stage, yet stage={self.stage!r}")
        if (self.kind == ProbeKind.EQUIVALENCE) != (self.equivalence is not None):
            raise ValueError("an equivalence probe, and only one, carries an EquivalenceRequest")
        if self.kind == ProbeKind.EXPORT_FILE and not self.exported:
            raise ValueError("an export-file probe needs the file to write (exported)")

    @property
    def tag(self) -> str:
        """The stage a measurement runs, else what the probe does: names its folder and cache file."""
        return self.stage if self.stage is not None else str(self.kind)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model.to_json(),
            "plan": self.plan.to_json(),
            "kind": str(self.kind),
            "stage": self.stage,
            "schedule": self.schedule.to_json(),
            "options": self.options.to_json(),
            "control": self.control,
            "regions": list(self.regions),
            "capture": self.capture,
            "label": self.label,
            "equivalence": self.equivalence.to_json() if self.equivalence is not None else None,
            # Only when set: every other probe's request, and so its cache key, stays as it was.
            **({"exported": self.exported} if self.exported else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProbeRequest:
        equivalence = data.get("equivalence")
        return cls(
            model=ModelSpec.from_json(data["model"]),
            plan=InputPlan.from_json(data["plan"]),
            stage=data.get("stage"),
            schedule=Schedule.from_json(data["schedule"]),
            options=ProbeOptions.from_json(data["options"]),
            control=bool(data.get("control")),
            regions=tuple(data.get("regions") or ("",)),
            capture=data.get("capture"),
            label=data.get("label", ""),
            kind=ProbeKind(data.get("kind", ProbeKind.MEASURE)),
            equivalence=EquivalenceRequest.from_json(equivalence) if equivalence else None,
            exported=str(data.get("exported") or ""),
        )

    def with_(self, **changes: Any) -> ProbeRequest:
        return replace(self, **changes)

    def key(self) -> str:
        """A stable hash of everything that decides what this probe measures (not its label)."""
        data = self.to_json()
        data.pop("label", None)
        if "exported" in data:  # a shared export's file lies in a temporary folder: its path varies
            data["exported"] = True
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
        return {
            "kind": self.kind,
            "where": self.where,
            "message": self.message,
            "traceback": self.traceback,
            "wall_s": self.wall_s,
            "probe_dir": self.probe_dir,
        }


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
            "kind": self.kind,
            "reason": self.reason,
            "signal": self.signal,
            "exit_code": self.exit_code,
            "tail": self.tail,
            "peak_rss": self.peak_rss,
            "wall_s": self.wall_s,
            "describe": self.describe(),
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
        return {
            "kind": self.kind,
            "timeout_s": self.timeout_s,
            "tail": self.tail,
            "wall_s": self.wall_s,
            "describe": self.describe(),
            "probe_dir": self.probe_dir,
        }


ProbeResult = Union[ProbeOk, ProbeFailed, ProbeCrashed, ProbeTimedOut]


def result_from_json(data: Mapping[str, Any]) -> ProbeResult:
    kind = data.get("kind")
    if kind == "ok":
        return ProbeOk(
            curve=MemoryCurve.from_json(data["curve"]),
            wall_s=float(data.get("wall_s", 0.0)),
            data=dict(data.get("data") or {}),
        )
    if kind == "failed":
        return ProbeFailed(
            where=data["where"],
            message=data["message"],
            traceback=data.get("traceback", ""),
            wall_s=float(data.get("wall_s", 0.0)),
            probe_dir=data.get("probe_dir", ""),
        )
    if kind == "crashed":
        return ProbeCrashed(
            reason=data["reason"],
            signal=data.get("signal"),
            exit_code=data.get("exit_code"),
            tail=data.get("tail", ""),
            peak_rss=data.get("peak_rss"),
            wall_s=float(data.get("wall_s", 0.0)),
            probe_dir=data.get("probe_dir", ""),
        )
    if kind == "timeout":
        return ProbeTimedOut(
            timeout_s=float(data["timeout_s"]),
            tail=data.get("tail", ""),
            wall_s=float(data.get("wall_s", 0.0)),
            probe_dir=data.get("probe_dir", ""),
        )
    raise ValueError(f"unknown probe result kind {kind!r}")
