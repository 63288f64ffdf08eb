"""The ceiling of bounded shape-growth: how far it grows over the declared range, and the peak it
settles at with the largest declared input (the plan's MAX of every symbol).

ONNX Runtime's arena (and any allocator that keeps memory for the largest input so far) grows with
each larger input and stops at the largest: expected behaviour, whose cost a team weighs against
its memory budget (``--budget``). The figures come from the measured curve, RSS and, where it was
measured, GPU memory:

- ``growth_bytes``: the peak minus the level before the new shapes (the end of the repeated ones);
- ``peak_bytes``: the largest reading once the largest declared input has run; where the schedule
  never ran it, the novel phase's rise per input element (a Theil-Sen slope: the arena follows the
  largest input so far) extended to it, never below what was measured.

Pure functions of plain data: the parent process never imports torch.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bisector.common.units import format_bytes

METRICS = ("rss", "gpu")


@dataclass(frozen=True)
class Ceiling:
    metric: str  # rss | gpu
    growth_bytes: float  # over the declared range: peak - the level before the new shapes
    peak_bytes: float  # at the largest declared input
    at: Mapping[str, int]  # the largest declared input: each symbol's MAX
    measured: bool  # the largest declared input was run (else the peak is extrapolated to it)

    def describe(self) -> str:
        """E.g. "settles at +31 MB, peak 412 MB at B=8, H=W=160"."""
        what = "" if self.metric == "rss" else f" {self.metric.upper()}"
        how = "" if self.measured else " (projected)"
        return (
            f"settles at {format_bytes(self.growth_bytes, signed=True)}{what}, peak {format_bytes(self.peak_bytes)}"
            f"{how} at {describe_dims(self.at)}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "growth_bytes": float(round(self.growth_bytes)),
            "peak_bytes": float(round(self.peak_bytes)),
            "at": dict(self.at),
            "measured": self.measured,
        }


def describe_dims(dims: Mapping[str, int]) -> str:
    """Symbols of one size share it: {"B": 8, "H": 160, "W": 160} -> "B=8, H=W=160"."""
    by_size: dict[int, list[str]] = {}
    for name in sorted(dims):
        by_size.setdefault(int(dims[name]), []).append(name)
    return ", ".join("=".join(names) + f"={size}" for size, names in by_size.items()) or "the fixed input"


def largest(ranges: Mapping[str, Iterable[int]]) -> dict[str, int]:
    """The largest declared input: every symbol at its MAX."""
    return {name: int(list(r)[-1]) for name, r in ranges.items()}


def _get(sample: Any, key: str) -> Any:
    """A sample's phase or dims: a Sample's attribute, or its JSON's key."""
    return sample.get(key) if isinstance(sample, Mapping) else getattr(sample, key, None)


def _value(sample: Any, metric: str) -> float | None:
    v = sample.get(metric)  # Sample.get and a sample's JSON both read the metric by name
    return None if v is None else float(v)


def _size(dims: Mapping[str, int]) -> float:
    return float(math.prod(int(v) for v in dims.values())) if dims else 1.0


def project(samples: Iterable[Any], ranges: Mapping[str, Iterable[int]], metric: str = "rss") -> Ceiling | None:
    """The ceiling of one metric over a curve's samples (Sample objects or their JSON); None when
    the curve has no reading of it."""
    rows = [(_get(s, "phase"), dict(_get(s, "dims") or {}), _value(s, metric)) for s in samples]
    rows = [(p, d, v) for p, d, v in rows if v is not None]
    if not rows:
        return None
    top = largest(ranges)
    novel_at = next((i for i, (p, _, _) in enumerate(rows) if p in ("novel", "within")), len(rows))
    base = rows[novel_at - 1][2] if novel_at > 0 else rows[0][2]
    hit = next((i for i, (_, d, _) in enumerate(rows) if d == top), None)
    peak = max(v for _, _, v in rows)
    measured = hit is not None
    if not measured:
        novel = [(_size(d), v) for p, d, v in rows if p == "novel"]
        if len(novel) >= 2:
            slopes = [(b[1] - a[1]) / (b[0] - a[0]) for i, a in enumerate(novel) for b in novel[i + 1 :] if b[0] > a[0]]
            slope = max(0.0, statistics.median(slopes)) if slopes else 0.0
            last_size, last = novel[-1]
            peak = max(peak, last + slope * max(0.0, _size(top) - last_size))
    return Ceiling(metric, max(0.0, peak - base), peak, top, measured)


def ceilings(samples: Iterable[Any], ranges: Mapping[str, Iterable[int]]) -> tuple[Ceiling, ...]:
    """RSS's ceiling, and the GPU's where it was measured."""
    rows = list(samples)
    return tuple(c for c in (project(rows, ranges, m) for m in METRICS) if c is not None)


def stage_ceilings(result: Any, ranges: Mapping[str, Iterable[int]]) -> tuple[Ceiling, ...]:
    """A stage's ceilings when its verdict is bounded shape-growth (the growth that settles); else ()."""
    verdict = getattr(result, "verdict", None)
    curve = getattr(result, "curve", None)
    if verdict is None or curve is None or verdict.kind != "shape-growth" or verdict.bounded is not True:
        return ()
    return ceilings(curve.samples, ranges)


def peak(found: Iterable[Ceiling], metric: str = "rss") -> float | None:
    return next((c.peak_bytes for c in found if c.metric == metric), None)


def over_budget(found: Iterable[Ceiling], budget: float | None) -> bool:
    """The projected RSS peak above the budget (a GPU peak is shown, and judged against no budget:
    ``--budget`` is the process's memory)."""
    p = peak(found)
    return budget is not None and p is not None and p > budget


def describe(found: Iterable[Ceiling]) -> str:
    return "; ".join(c.describe() for c in found)
