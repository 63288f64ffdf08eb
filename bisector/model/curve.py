"""Memory curves: what a probe measured, one sample after every call. Plain data, JSON-safe."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Meter readings a sample may carry. Bytes unless noted.
#   rss, uss         process resident / unique (private) memory, from psutil
#   heap             the C heap's in-use bytes (glibc mallinfo2), exact (see probe/meters.py)
#   objects          live gc-tracked Python objects (a count)
#   tensors          bytes of the unique storages of live tensors Python can reach, exact (probe/meters.py)
#   gpu              this process's GPU memory from NVML (device-wide when per-process is unavailable)
#   cuda_allocated   torch.cuda.memory_allocated (exact, like a count)
#   cuda_reserved    torch.cuda.memory_reserved
#   traced           tracemalloc's current traced size (only with --tracemalloc)
METRICS = ("rss", "uss", "heap", "objects", "gpu", "cuda_allocated", "cuda_reserved", "traced", "tensors")


@dataclass(frozen=True)
class Sample:
    phase: str
    dims: Mapping[str, int]
    values: Mapping[str, float]

    def get(self, metric: str) -> float | None:
        return self.values.get(metric)

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "dims": dict(self.dims), **{k: v for k, v in self.values.items() if v is not None}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sample:
        values = {k: v for k, v in data.items() if k in METRICS}
        return cls(phase=data["phase"], dims=dict(data.get("dims") or {}), values=values)


@dataclass(frozen=True)
class MemoryCurve:
    samples: tuple[Sample, ...]
    # Growth of live objects by type over each phase: {"repeat": {"torch.Tensor": 16, ...}}.
    type_growth: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # Where the run happened and how: device, providers, exporter, threads, wall time, notes.
    meta: Mapping[str, Any] = field(default_factory=dict)

    def series(self, metric: str, phase: str | None = None) -> list[float]:
        return [
            s.values[metric]
            for s in self.samples
            if (phase is None or s.phase == phase) and s.values.get(metric) is not None
        ]

    def has(self, metric: str) -> bool:
        return any(s.values.get(metric) is not None for s in self.samples)

    def segment(self, metric: str, phase: str) -> list[float]:
        """The phase's readings, preceded by the last reading before it (so the first delta counts)."""
        out: list[float] = []
        anchor: float | None = None
        for s in self.samples:
            v = s.values.get(metric)
            if v is None:
                continue
            if s.phase == phase:
                if not out and anchor is not None:
                    out.append(anchor)
                out.append(v)
            elif not out:
                anchor = v
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": [s.to_json() for s in self.samples],
            "type_growth": {k: dict(v) for k, v in self.type_growth.items()},
            "meta": dict(self.meta),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MemoryCurve:
        return cls(
            samples=tuple(Sample.from_json(s) for s in data["samples"]),
            type_growth={k: dict(v) for k, v in (data.get("type_growth") or {}).items()},
            meta=dict(data.get("meta") or {}),
        )
