"""From memory curves to verdicts: clean, leak, shape-growth, toolchain-leak or inconclusive.

Each stage's curve is judged against the same schedule run on a trivial control module (so torch's
or ONNX Runtime's own growth is never blamed on the model), one signal per metric and phase
(signals.py: exact counts, the C heap, tensor storage, noisy bytes).

Per phase (see schedule.py): growth in ``repeat`` is a leak; growth only in ``novel`` is
shape-growth, ``bounded`` when the ``within`` phase (new shapes, none larger) stays flat.

Whose growth it is (the model's, or torch's or ONNX Runtime's: a ``toolchain-leak``) is decided
afterwards, from traced probes (attribution.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bisector.common.units import format_bytes
from bisector.judge.signals import (
    COUNT_METRICS,
    FLAT,
    GROWS,
    HEAP,
    TENSORS,
    UNSURE,
    Signal,
    bytes_signal,
    count_signal,
    heap_signal,
    robust_sd,
    tensor_signal,
)
from bisector.model.curve import MemoryCurve
from bisector.model.kinds import Kind, worst  # noqa: F401 - worst: re-exported from its old home

# The verdict kinds, by their old names: kept so the many importers need no change.
CLEAN, LEAK, SHAPE_GROWTH, INCONCLUSIVE = Kind.CLEAN, Kind.LEAK, Kind.SHAPE_GROWTH, Kind.INCONCLUSIVE
TOOLCHAIN_LEAK = Kind.TOOLCHAIN_LEAK


@dataclass(frozen=True)
class Bands:
    """How much a bytes metric may wander before growth counts (seed: RSS +-5 MB, GPU +-200 MB)."""

    rss: float = 5e6
    gpu: float = 200e6

    def for_metric(self, metric: str) -> float:
        return self.gpu if metric == "gpu" else self.rss

    def to_json(self) -> dict[str, float]:
        return {"rss": self.rss, "gpu": self.gpu}


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    growth_bytes_per_call: float | None
    growth_bytes_per_new_shape: float | None
    baseline_bytes_per_call: float | None
    baseline_bytes_per_new_shape: float | None
    noise_bytes: float | None
    objects_per_call: float | None = None
    baseline_objects_per_call: float | None = None
    objects_per_new_shape: float | None = None
    bounded: bool | None = None
    confidence: float = 0.0
    metric: str = "rss"
    reasons: tuple[str, ...] = ()
    signals: tuple[Signal, ...] = field(default=(), repr=False)
    # The smallest growth this verdict would have called a leak (per call) or shape-growth (per new
    # shape), given the noise and steps it saw; None where no bytes signal could tell.
    floor_bytes_per_call: float | None = None
    floor_bytes_per_new_shape: float | None = None
    # The 95% interval (+-) of growth_bytes_per_call on the heap, and the model probe's own per-call
    # noise there (torch's or ONNX Runtime's for this model): what limits how low its floor can go.
    error_bytes_per_call: float | None = None
    model_noise_bytes_per_call: float | None = None
    growth_metric: str = "rss"  # the meter behind growth_bytes_per_call: heap when it exists
    decided_by: str | None = None  # the metric whose signal settled the verdict (the chart draws it)
    owners: Mapping[str, Any] | None = None  # who keeps the growth (owners.py), when traced
    heap_bytes_per_new_shape: float | None = None  # reported, not judged (module docstring)

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.kind,
            "growth_bytes_per_call": _round(self.growth_bytes_per_call),
            "growth_bytes_per_new_shape": _round(self.growth_bytes_per_new_shape),
            "baseline_bytes_per_call": _round(self.baseline_bytes_per_call),
            "baseline_bytes_per_new_shape": _round(self.baseline_bytes_per_new_shape),
            "noise_bytes": _round(self.noise_bytes),
            "objects_per_call": _round(self.objects_per_call, 2),
            "baseline_objects_per_call": _round(self.baseline_objects_per_call, 2),
            "objects_per_new_shape": _round(self.objects_per_new_shape, 2),
            "bounded": self.bounded,
            "confidence": round(self.confidence, 2),
            "metric": self.metric,
            "growth_metric": self.growth_metric,
            "decided_by": self.decided_by,
            "floor_bytes_per_call": _round(self.floor_bytes_per_call),
            "floor_bytes_per_new_shape": _round(self.floor_bytes_per_new_shape),
            "error_bytes_per_call": _round(self.error_bytes_per_call),
            "model_noise_bytes_per_call": _round(self.model_noise_bytes_per_call),
            "heap_bytes_per_new_shape": _round(self.heap_bytes_per_new_shape),
            "owners": dict(self.owners) if self.owners else None,
            "reasons": list(self.reasons),
        }


def _round(value: float | None, digits: int = 0) -> float | None:
    if value is None:
        return None
    return round(value, digits) if digits else float(round(value))


# ---------------------------------------------------------------------------------------------
# The verdict


ALL_PHASES = ("repeat", "novel", "within")


@dataclass(frozen=True)
class _Curves:
    """One stage's curve and its control (None when it could not run), as judge reads them."""

    curve: MemoryCurve
    control: MemoryCurve | None
    bands: Bands
    metric: str

    def ctrl(self, m: str, phase: str) -> list[float] | None:
        return self.control.segment(m, phase) if self.control is not None and self.control.has(m) else None

    @property
    def bytes_metrics(self) -> list[str]:
        return [m for m in (self.metric, "gpu") if self.curve.has(m)]

    @property
    def count_metrics(self) -> list[str]:
        return [m for m in COUNT_METRICS if self.curve.has(m)]


def judge(
    curve: MemoryCurve,
    control: MemoryCurve | None,
    bands: Bands = Bands(),
    metric: str = "rss",
    count_phases: tuple[str, ...] = ALL_PHASES,
    step: str = "call",
    floor_target: float = 0.0,
) -> Verdict:
    """Judge one stage's curve against its control run (None when the control could not run).
    step: what one repeated step is in this stage ("call", "export", "run"), for the reasons' text.

    count_phases: where object counts are judged. The export stage judges them per call only:
    torch's exporter keeps per-shape caches of its own (FakeTensorMode's dispatch cache, sympy's)
    whose size follows the model's op count, so a trivial control cannot subtract them.
    """
    reasons: list[str] = []
    if control is None:
        reasons.append("no control run: growth is not corrected for torch's or the runtime's own")
    c = _Curves(curve, control, bands, metric)
    noise = {m: robust_sd(curve.segment(m, "repeat")) for m in c.bytes_metrics}
    signals, per_call = _repeat_signals(c, noise, floor_target, reasons)
    info: list[Signal] = []  # measured and reported, not judged
    for phase in ("novel", "within"):
        judged, reported = _phase_signals(c, phase, noise, per_call, count_phases)
        signals += judged
        info += reported
    kind, decisive = _kind(signals)
    reasons.extend(s.describe(step) for s in decisive if s.state != FLAT)
    by = {(s.metric, s.phase): s for s in signals}
    rep, nov = _headline(by, metric)
    heap_novel = next((s for s in info if s.metric == HEAP and s.phase == "novel"), None)
    obj = by.get(("objects", "repeat"))
    obj_novel = by.get(("objects", "novel")) or next(
        (s for s in info if s.metric == "objects" and s.phase == "novel"), None
    )
    return Verdict(
        kind=kind,
        growth_bytes_per_call=rep.rate if rep else None,
        growth_bytes_per_new_shape=nov.rate if nov else None,
        baseline_bytes_per_call=rep.baseline if rep else None,
        baseline_bytes_per_new_shape=nov.baseline if nov else None,
        noise_bytes=noise.get(metric),
        objects_per_call=obj.rate if obj else None,
        baseline_objects_per_call=obj.baseline if obj else None,
        objects_per_new_shape=obj_novel.rate if obj_novel else None,
        bounded=_bounded(kind, decisive, signals),
        confidence=max(0.0, min(1.0, _confidence(kind, decisive, bands))),
        metric=metric,
        reasons=tuple(reasons),
        signals=tuple(signals),
        floor_bytes_per_call=rep.floor if rep is not None else None,
        floor_bytes_per_new_shape=nov.floor if nov is not None else None,
        error_bytes_per_call=rep.error if rep is not None else None,
        model_noise_bytes_per_call=rep.own_noise if rep is not None else None,
        growth_metric=rep.metric if rep is not None else metric,
        decided_by=_decided_by(kind, decisive, rep),
        heap_bytes_per_new_shape=heap_novel.rate if heap_novel is not None else None,
    )


def _repeat_signals(
    c: _Curves, noise: Mapping[str, float], floor_target: float, reasons: list[str]
) -> tuple[list[Signal], dict[str, float]]:
    """Every metric over the repeated shapes (all judged), and each one's rate per call: what the
    new-shape phases are judged above."""
    curve = c.curve
    signals: list[Signal] = []
    per_call: dict[str, float] = {}
    for m in c.count_metrics:
        s = count_signal(m, "repeat", curve.segment(m, "repeat"), c.ctrl(m, "repeat"))
        signals.append(s)
        per_call[m] = s.rate
    if curve.has(HEAP):
        s = heap_signal(curve.segment(HEAP, "repeat"), c.ctrl(HEAP, "repeat"), pass_length(curve), floor_target)
        signals.append(s)
        if s.under_target is not None:
            reasons.append(
                f"heap {format_bytes(s.rate, signed=True)}/call ± {format_bytes(s.error)} grows, under the "
                f"{format_bytes(s.under_target)} target: not a leak of the size asked about (this model's own "
                "per-call growth under the toolchain, or a leak smaller than the target)"
            )
        per_call[HEAP] = s.rate
    if curve.has(TENSORS):
        element = float(curve.meta.get("tensor_element_bytes") or 1)
        s = tensor_signal(curve.segment(TENSORS, "repeat"), c.ctrl(TENSORS, "repeat"), pass_length(curve), element)
        signals.append(s)
        per_call[TENSORS] = s.rate
    for m in c.bytes_metrics:
        s = bytes_signal(m, "repeat", curve.segment(m, "repeat"), c.ctrl(m, "repeat"), c.bands.for_metric(m), noise[m])
        signals.append(s)
        per_call[m] = s.rate
    return signals, per_call


def _phase_signals(
    c: _Curves, phase: str, noise: Mapping[str, float], per_call: Mapping[str, float], count_phases: tuple[str, ...]
) -> tuple[list[Signal], list[Signal]]:
    """One new-shape phase's signals, above each metric's growth per call: (judged, reported only).
    The heap and tensor storage are reported, not judged, per new shape (signals.py's docstring):
    an infinite band never "grows"."""
    judged: list[Signal] = []
    info: list[Signal] = []
    for m in c.count_metrics:
        y = c.curve.segment(m, phase)
        if len(y) > 1:
            s = count_signal(m, phase, y, c.ctrl(m, phase), offset=max(0.0, per_call[m]))
            (judged if phase in count_phases else info).append(s)
    for m in c.bytes_metrics:
        y = c.curve.segment(m, phase)
        if len(y) > 1:
            band = c.bands.for_metric(m)
            judged.append(bytes_signal(m, phase, y, c.ctrl(m, phase), band, noise[m], offset=max(0.0, per_call[m])))
    for m in (HEAP, TENSORS):
        if c.curve.has(m) and len(c.curve.segment(m, phase)) > 1:
            y = c.curve.segment(m, phase)
            info.append(bytes_signal(m, phase, y, c.ctrl(m, phase), float("inf"), 0.0, offset=max(0.0, per_call[m])))
    return judged, info


def _kind(signals: list[Signal]) -> tuple[Kind, list[Signal]]:
    """The verdict's kind by phase, and the signals that decided it: growth over the repeated
    shapes is a leak, only over new shapes shape-growth; unsure anywhere (and no growth) is
    inconclusive."""
    repeat = [s for s in signals if s.phase == "repeat"]
    novel = [s for s in signals if s.phase == "novel"]
    if any(s.state == GROWS for s in repeat):
        return LEAK, [s for s in repeat if s.state == GROWS]
    if any(s.state == GROWS for s in novel):
        return SHAPE_GROWTH, [s for s in novel if s.state == GROWS]
    if any(s.state == UNSURE for s in repeat + novel):
        return INCONCLUSIVE, [s for s in repeat + novel if s.state == UNSURE]
    return CLEAN, repeat + novel


def _bounded(kind: str, decisive: list[Signal], signals: list[Signal]) -> bool | None:
    """Shape-growth whose grown metrics stay flat over the within phase (new shapes, none larger)
    is bounded; one that grows there is not; None where the within phase cannot say."""
    if kind != SHAPE_GROWTH:
        return None
    grown = {s.metric for s in decisive}
    within_states = [s.state for s in signals if s.phase == "within" and s.metric in grown]
    if not within_states:
        return None
    return True if all(st == FLAT for st in within_states) else (False if GROWS in within_states else None)


def _confidence(kind: str, decisive: list[Signal], bands: Bands) -> float:
    """Clean: how far under what would have counted the largest rise stayed; growth: the share of
    steps up of its strongest signal; inconclusive: one half."""
    if kind == CLEAN:
        return min((1.0 - max(0.0, _rise(s, bands)) for s in decisive), default=1.0)
    if kind == INCONCLUSIVE:
        return 0.5
    return max(s.agreement for s in decisive)


def _grown_device(by: Mapping[tuple[str, str], Signal], phase: str) -> Signal | None:
    """The device memory that grew over a phase, if any: torch's exact allocator count first."""
    return next(
        (s for m in ("cuda_allocated", "gpu") if (s := by.get((m, phase))) is not None and s.state == GROWS), None
    )


def _headline(by: Mapping[tuple[str, str], Signal], metric: str) -> tuple[Signal | None, Signal | None]:
    """The signals behind the growth figures, per call and per new shape. Per call: the exact
    heap's (else the chosen bytes metric's), or the tensor meter's where it saw growth under the
    bytes meters' floors.

    On a GPU the host heap and the device are two memories: a tensor kept on the device every call
    shows as a few KB of host bookkeeping and megabytes of device memory (seen on an H200: heap
    +3.8 KB/call, cuda_allocated +16.8 MB/call). The headline is the larger of the two, and torch's
    exact allocator count goes before NVML's coarse reading."""
    rep = by.get((HEAP, "repeat")) or by.get((metric, "repeat"))
    held = by.get((TENSORS, "repeat"))
    if held is not None and held.state != FLAT and (rep is None or rep.state == FLAT):
        rep = held  # growth under the bytes meters' floors that the exact tensor meter saw
    device = _grown_device(by, "repeat")
    if device is not None and (rep is None or rep.state == FLAT or device.rate > (rep.rate or 0.0)):
        rep = device
    nov = by.get((metric, "novel"))
    device_novel = _grown_device(by, "novel")
    if device_novel is not None and (nov is None or nov.state == FLAT or device_novel.rate > (nov.rate or 0.0)):
        nov = device_novel  # per new shape as per call: the device's bytes when they outgrow the host's
    return rep, nov


def _decided_by(kind: str, decisive: list[Signal], rep: Signal | None) -> str | None:
    """The metric a person should look at: the one that grew (exact ones first), or for a clean
    verdict the one whose floor it states."""
    grown = [s for s in decisive if s.state != FLAT]
    if grown:
        order = {"objects": 0, "cuda_allocated": 1, TENSORS: 2, HEAP: 3}
        return min(grown, key=lambda s: order.get(s.metric, 4)).metric
    return rep.metric if rep is not None else None


def _rise(s: Signal, bands: Bands) -> float:
    """A flat signal's rise as a share of what would have counted (counts: 0 when flat)."""
    if s.metric in COUNT_METRICS:
        return 0.0
    if s.metric in (HEAP, TENSORS):
        return s.rate / s.floor if s.floor else 0.0
    return s.rate * s.steps / bands.for_metric(s.metric)


def pass_length(curve: MemoryCurve) -> int:
    """Calls per pass over the repeated shapes: the distinct shapes of the repeat phase."""
    return max(1, len({tuple(sorted(s.dims.items())) for s in curve.samples if s.phase == "repeat"}))
