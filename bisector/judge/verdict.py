"""From memory curves to verdicts: clean, leak, shape-growth, toolchain-leak or inconclusive.

Three kinds of signal are judged, each against the same schedule run on a trivial control module
(so torch's or ONNX Runtime's own growth is never blamed on the model):

- counts (live Python objects, torch.cuda.memory_allocated): exact, so a per-call delta either is
  or is not above the control's. A segment *grows* when at least 80% of its deltas are above the
  control's median delta, in the spirit of CPython's refleak hunter ([5,5,6] leaks; [3,0,0] and
  [8,-8,1] do not).
- the C heap's in-use bytes (``heap``, glibc mallinfo2): exact to the byte, but the runtime's own
  per-call jitter (an exporter run allocates and keeps a few KB of its own) is not zero. Per call
  it grows when the median excess delta over the control's clears a threshold set by that jitter
  and the number of calls (the standard error of a median), in the later half too, and in at least
  80% of the passes over the repeated shapes (so a one-off allocation is not a leak, and one on
  every other call is). That threshold is the stage's *detection floor*. Per new shape the heap is
  reported, not judged: torch's oneDNN primitive cache (~110 KB per new shape for a 5-conv CNN) and
  ONNX Runtime's memory patterns keep native memory per shape that no control subtracts and no
  meter can tell from a model's; a model's own per-shape caches are Python objects, counted exactly.
- the bytes of live tensors' unique storages (``tensors``, probe/meters.py): exact, like a count, so
  judged per pass like the heap (80% of the passes, and the later half) but with a floor of one
  element of the smallest dtype seen: a tensor gaining one row a call is growth at any size. Per
  new shape it is reported, not judged: a buffer regrown to the largest input so far (a causal
  mask, a rotary table) grows over ascending shapes exactly as a leak would, and its objects stay
  flat; a per-shape cache of tensors is a count of objects already.
- bytes (RSS or USS, NVML GPU memory): noisy, so a robust Theil-Sen slope is fitted and its rise
  over the segment must clear the noise band (seed article: RSS +-5 MB, GPU +-200 MB) and four times
  the noise this very probe showed while repeating shapes. A rise between half the band and the
  band, or noise as large as the band, is *unsure*: the probe is rerun with more iterations.

Per phase (see schedule.py): growth in ``repeat`` is a leak; growth only in ``novel`` is
shape-growth, ``bounded`` when the ``within`` phase (new shapes, none larger) stays flat.

A per-call leak seen only in bytes has an owner (see owners.py): growth that a traced probe puts in
torch's or ONNX Runtime's own files is a ``toolchain-leak``, reported as theirs, never the model's.
Eager growth per new shape seen only in bytes (no object of the model's grew) is measured once more
with torch's oneDNN primitive cache off (``NATIVE_TWIN_ENV``): a cache of ~100 KB per new conv
shape, bounded by its capacity (1024 by default), that no trivial control exercises. Growth that
goes away then is the toolchain's too (``attribute_shapes``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bisector.common.units import format_bytes
from bisector.judge.owners import (
    MODEL,
    TOOLCHAIN,
    model_share,
    native_share,
    object_owners,
    object_site,
    toolchain_objects,
    toolchain_share,
    top_site,
)
from bisector.model.curve import MemoryCurve
from bisector.model.kinds import Kind, worst  # noqa: F401 - worst: re-exported from its old home

GROWS, FLAT, UNSURE = "grows", "flat", "unsure"
# The verdict kinds, by their old names: kept so the many importers need no change.
CLEAN, LEAK, SHAPE_GROWTH, INCONCLUSIVE = Kind.CLEAN, Kind.LEAK, Kind.SHAPE_GROWTH, Kind.INCONCLUSIVE
TOOLCHAIN_LEAK = Kind.TOOLCHAIN_LEAK

COUNT_METRICS = ("objects", "cuda_allocated")
HEAP = "heap"
TENSORS = "tensors"
MIN_DELTAS = 3  # fewer deltas than this cannot show "every call"
POSITIVE_SHARE = 0.8
NOISE_FACTOR = 4.0
# The heap rule. Z: how many standard errors the median excess delta must clear. The floor is set
# by the measured spread alone (docs/floor.md): a fixed minimum would be a property of one model's
# noise (a clean GPT-2 block once showed ~1 KB/call of torch's own native growth), not of the
# meter, whose resolution is one allocation: HEAP_ALLOCATION, glibc's smallest chunk on 64 bits.
# torch's own growth above the floor is told apart by the traced probes (attribute), not hidden.
HEAP_Z = 3.0
HEAP_ALLOCATION = 32.0
# 1.2533 = sqrt(pi/2): the standard error of a median is that much larger than a mean's.
MEDIAN_SE = 1.2533
# The interval printed with a growth figure: +-1.96 standard errors (95%).
INTERVAL_Z = 1.96


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
class Signal:
    metric: str
    phase: str
    state: str  # grows | flat | unsure
    rate: float  # per step, above the control's rate (bytes or objects)
    baseline: float  # the control's rate over the same phase
    noise: float  # bytes: robust sd of the repeat-phase residuals (heap: of the deltas); counts: 0
    agreement: float  # share of deltas (counts) or pairwise slopes (bytes) that are positive
    steps: int
    # The smallest rate per step this signal would have called growth, given its noise and steps
    # (None: not a bytes signal, or too few steps to tell).
    floor: float | None = None
    # Heap: the standard error of the rate per call, and the model probe's own spread per call (the
    # toolchain's per-call noise for this model: the control's is a trivial module's).
    error: float | None = None
    own_noise: float | None = None
    # Heap: growth above the floor whose interval stays under the stage's target (see heap_signal).
    under_target: float | None = None

    def describe(self, step: str = "call") -> str:
        """step: what one repeated step is in this stage ("call", "export", "run")."""
        unit = "objects" if self.metric == "objects" else None
        per = step if self.phase == "repeat" else "new shape"
        amount = f"{self.rate:+.1f} objects" if unit else format_bytes(self.rate, signed=True)
        floor = f", floor {format_bytes(self.floor)}" if self.floor is not None and not unit else ""
        return f"{self.metric} {amount}/{per} ({self.state}, {self.agreement:.0%} of steps up{floor})"


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
# Robust statistics (stdlib only: the parent process never imports numpy or torch)


def theil_sen(y: list[float]) -> tuple[float, float]:
    """Median of pairwise slopes and the matching intercept, with x = 0, 1, 2, ..."""
    n = len(y)
    if n < 2:
        return 0.0, (y[0] if y else 0.0)
    slopes = [(y[j] - y[i]) / (j - i) for i in range(n) for j in range(i + 1, n)]
    slope = statistics.median(slopes)
    intercept = statistics.median(y[i] - slope * i for i in range(n))
    return slope, intercept


def positive_share(y: list[float]) -> float:
    n = len(y)
    pairs = [(y[j] - y[i]) for i in range(n) for j in range(i + 1, n)]
    return sum(1 for p in pairs if p > 0) / len(pairs) if pairs else 0.0


def robust_sd(y: list[float]) -> float:
    """Spread of the residuals around the Theil-Sen line, as an sd: the larger of 1.4826 * MAD and
    IQR / 1.349. (MAD alone reads 0 for RSS that flips between two page counts, more often at one.)"""
    if len(y) < 3:
        return 0.0
    slope, intercept = theil_sen(y)
    resid = [v - (intercept + slope * i) for i, v in enumerate(y)]
    med = statistics.median(resid)
    mad = 1.4826 * statistics.median(abs(r - med) for r in resid)
    q1, _, q3 = statistics.quantiles(resid, n=4, method="inclusive")
    return max(mad, (q3 - q1) / 1.349)


def deltas(y: list[float]) -> list[float]:
    return [b - a for a, b in zip(y, y[1:])]


# ---------------------------------------------------------------------------------------------
# Signals


def count_signal(metric: str, phase: str, y: list[float], control: list[float] | None, offset: float = 0.0) -> Signal:
    """Exact counts: grows when >= 80% of deltas exceed the control's median delta (+ offset),
    by more than the control's own jitter, and still do so in the later half (a leak does not
    fade; a cache still warming up does)."""
    d = deltas(y)
    cd = deltas(control) if control and len(control) > 1 else []
    base = statistics.median(cd) if cd else 0.0
    jitter = (max(cd) - min(cd)) if cd else 0.0
    excess = [x - base - offset for x in d]
    if len(excess) < MIN_DELTAS:
        return Signal(
            metric, phase, FLAT if not any(e > jitter for e in excess) else UNSURE, 0.0, base, jitter, 0.0, len(excess)
        )
    share = sum(1 for e in excess if e > 0) / len(excess)
    rate = statistics.median(excess)
    late = statistics.median(excess[len(excess) // 2 :])
    if share >= POSITIVE_SHARE and rate > jitter and late > jitter:
        state = GROWS
    elif share > 0.5 and late > jitter and sum(excess) > 0:
        state = UNSURE  # mostly up and still rising at the end: more iterations will tell
    else:
        state = FLAT
    return Signal(metric, phase, state, rate, base, jitter, share, len(excess))


def robust_spread(d: list[float]) -> float:
    """1.4826 * MAD around the median: an sd that one-off jumps do not inflate."""
    if len(d) < 2:
        return 0.0
    med = statistics.median(d)
    return 1.4826 * statistics.median(abs(x - med) for x in d)


def heap_signal(y: list[float], control: list[float] | None, pass_len: int = 1, target: float = 0.0) -> Signal:
    """The exact heap per call (see the module docstring), judged per pass over the repeated
    shapes (pass_len calls each): a pass is one replicate of the same work, so a leak on every
    other call grows in every pass, and a one-off allocation in one pass only.

    target: the smallest leak per call asked for (--floor). Growth above the floor whose 95%
    interval stays under it is flat, with its upper bound as the floor stated: a floor far under
    the target resolves the toolchain's own per-call growth for some models (a clean transformer
    block: ~200 B/call), which is no leak of the size asked about and is printed as measured."""
    k = max(1, pass_len)
    d = deltas(y)
    cd = deltas(control) if control and len(control) > 1 else []
    base = statistics.median(cd) if cd else 0.0  # the runtime's own growth per call
    passes = [sum(d[j : j + k]) for j in range(0, len(d) - k + 1, k)]
    control_passes = [sum(cd[j : j + k]) for j in range(0, len(cd) - k + 1, k)]
    excess = [p - base * k for p in passes]
    n = len(excess)
    if n < MIN_DELTAS:
        return Signal(HEAP, "repeat", FLAT if n == 0 or max(excess) <= 0 else UNSURE, 0.0, base, 0.0, 0.0, len(d), None)
    own = robust_spread(passes)
    spread = max(own, robust_spread(control_passes))
    # The standard error of the median excess per pass, per call; HEAP_Z of them is the floor: more
    # passes give a lower floor, which is what adaptive iterations buy (lab.Lab.stage). Never below
    # one allocation per pass: the meter cannot resolve less.
    error = MEDIAN_SE * spread / n**0.5 / k
    floor = max(HEAP_ALLOCATION / k, HEAP_Z * error)
    rate = statistics.median(excess) / k
    late = statistics.median(excess[n // 2 :]) / k
    up = sum(1 for p in excess if p > floor * k / 2) / n
    if rate > floor and late > floor and up >= POSITIVE_SHARE:
        state = GROWS
    elif max(rate, late) > floor and up >= 0.5:
        state = UNSURE  # rising, but not in every pass or not to the end: more passes will tell
    else:
        state = FLAT
    interval = INTERVAL_Z * error
    if state != FLAT and rate + interval < target:
        return Signal(HEAP, "repeat", FLAT, rate, base, spread, up, len(d), rate + interval, interval, own / k, target)
    return Signal(HEAP, "repeat", state, rate, base, spread, up, len(d), floor, interval, own / k)


def tensor_signal(y: list[float], control: list[float] | None, pass_len: int = 1, element: float = 1.0) -> Signal:
    """Tensor storage bytes per call, exact (see the module docstring): per pass over the repeated
    shapes, as heap_signal (a tensor kept per input size cancels over a pass; a leak on every other
    call grows in every pass), with the floor one element (or the control's own spread per pass,
    if larger) instead of the heap's jitter-derived one."""
    k = max(1, pass_len)
    d = deltas(y)
    cd = deltas(control) if control and len(control) > 1 else []
    base = statistics.median(cd) if cd else 0.0
    passes = [sum(d[j : j + k]) for j in range(0, len(d) - k + 1, k)]
    control_passes = [sum(cd[j : j + k]) for j in range(0, len(cd) - k + 1, k)]
    jitter = (max(control_passes) - min(control_passes)) if control_passes else 0.0
    floor = max(float(element), jitter)  # per pass
    excess = [p - base * k for p in passes]
    n = len(excess)
    if n < MIN_DELTAS:
        state = FLAT if n == 0 or max(excess) < floor else UNSURE
        return Signal(TENSORS, "repeat", state, 0.0, base, jitter, 0.0, len(d), floor / k)
    rate = statistics.median(excess) / k
    late = statistics.median(excess[n // 2 :]) / k
    up = sum(1 for e in excess if e >= floor) / n
    if up >= POSITIVE_SHARE and rate * k >= floor and late * k >= floor:
        state = GROWS
    elif up > 0.5 and late * k >= floor and sum(excess) > 0:
        state = UNSURE  # mostly up and still rising at the end: more passes will tell
    else:
        state = FLAT
    return Signal(TENSORS, "repeat", state, rate, base, jitter, up, len(d), floor / k)


def bytes_signal(
    metric: str,
    phase: str,
    y: list[float],
    control: list[float] | None,
    band: float,
    noise: float,
    offset: float = 0.0,
) -> Signal:
    """Noisy bytes: the Theil-Sen rise above the control must clear the band and the probe's noise."""
    n = len(y)
    if n < 3:
        return Signal(metric, phase, FLAT, 0.0, 0.0, noise, 0.0, max(0, n - 1))
    slope, _ = theil_sen(y)
    base = theil_sen(control)[0] if control and len(control) >= 2 else 0.0
    rate = slope - base - offset
    rise = rate * (n - 1)
    if phase != "repeat":
        # Staircases (an arena doubling) fit a line badly; the net change must agree with the slope.
        net = (y[-1] - y[0]) - (base + offset) * (n - 1)
        rise = min(rise, net) if net > 0 else net
    share = positive_share(y)
    floor = max(band, NOISE_FACTOR * noise) / (n - 1)
    if rise > band and rise > NOISE_FACTOR * noise:
        state = GROWS
    elif noise * 2 > band or (phase == "repeat" and rise > band / 2):
        # Only per-call growth can be settled by more iterations: a slow leak keeps rising,
        # while growth over new shapes is bounded by the range, however many steps there are.
        state = UNSURE
    else:
        state = FLAT
    return Signal(metric, phase, state, rate, base, noise, share, n - 1, floor)


# ---------------------------------------------------------------------------------------------
# The verdict


ALL_PHASES = ("repeat", "novel", "within")


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
    signals: list[Signal] = []
    reasons: list[str] = []
    if control is None:
        reasons.append("no control run: growth is not corrected for torch's or the runtime's own")

    def ctrl(m: str, phase: str) -> list[float] | None:
        return control.segment(m, phase) if control is not None and control.has(m) else None

    bytes_metrics = [m for m in (metric, "gpu") if curve.has(m)]
    count_metrics = [m for m in COUNT_METRICS if curve.has(m)]
    noise = {m: robust_sd(curve.segment(m, "repeat")) for m in bytes_metrics}

    per_call: dict[str, float] = {}
    for m in count_metrics:
        s = count_signal(m, "repeat", curve.segment(m, "repeat"), ctrl(m, "repeat"))
        signals.append(s)
        per_call[m] = s.rate
    info: list[Signal] = []  # measured and reported, not judged
    heap = curve.has(HEAP)
    if heap:
        s = heap_signal(curve.segment(HEAP, "repeat"), ctrl(HEAP, "repeat"), pass_length(curve), floor_target)
        signals.append(s)
        if s.under_target is not None:
            reasons.append(
                f"heap {format_bytes(s.rate, signed=True)}/call ± {format_bytes(s.error)} grows, under the "
                f"{format_bytes(s.under_target)} target: not a leak of the size asked about (this model's own "
                "per-call growth under the toolchain, or a leak smaller than the target)"
            )
        per_call[HEAP] = s.rate
    tensors = curve.has(TENSORS)
    if tensors:
        element = float(curve.meta.get("tensor_element_bytes") or 1)
        s = tensor_signal(curve.segment(TENSORS, "repeat"), ctrl(TENSORS, "repeat"), pass_length(curve), element)
        signals.append(s)
        per_call[TENSORS] = s.rate
    for m in bytes_metrics:
        s = bytes_signal(m, "repeat", curve.segment(m, "repeat"), ctrl(m, "repeat"), bands.for_metric(m), noise[m])
        signals.append(s)
        per_call[m] = s.rate

    for phase in ("novel", "within"):
        for m in count_metrics:
            y = curve.segment(m, phase)
            if len(y) > 1:
                s = count_signal(m, phase, y, ctrl(m, phase), offset=max(0.0, per_call[m]))
                (signals if phase in count_phases else info).append(s)
        for m in bytes_metrics:
            y = curve.segment(m, phase)
            if len(y) > 1:
                signals.append(
                    bytes_signal(
                        m, phase, y, ctrl(m, phase), bands.for_metric(m), noise[m], offset=max(0.0, per_call[m])
                    )
                )
        if heap and len(curve.segment(HEAP, phase)) > 1:
            # Reported, not judged (see the module docstring): an infinite band never "grows".
            y = curve.segment(HEAP, phase)
            info.append(
                bytes_signal(HEAP, phase, y, ctrl(HEAP, phase), float("inf"), 0.0, offset=max(0.0, per_call[HEAP]))
            )
        if tensors and len(curve.segment(TENSORS, phase)) > 1:
            y = curve.segment(TENSORS, phase)
            info.append(
                bytes_signal(
                    TENSORS, phase, y, ctrl(TENSORS, phase), float("inf"), 0.0, offset=max(0.0, per_call[TENSORS])
                )
            )

    by = {(s.metric, s.phase): s for s in signals}
    repeat = [s for s in signals if s.phase == "repeat"]
    novel = [s for s in signals if s.phase == "novel"]
    within = [s for s in signals if s.phase == "within"]

    if any(s.state == GROWS for s in repeat):
        kind = LEAK
        decisive = [s for s in repeat if s.state == GROWS]
    elif any(s.state == GROWS for s in novel):
        kind = SHAPE_GROWTH
        decisive = [s for s in novel if s.state == GROWS]
    elif any(s.state == UNSURE for s in repeat + novel):
        kind = INCONCLUSIVE
        decisive = [s for s in repeat + novel if s.state == UNSURE]
    else:
        kind = CLEAN
        decisive = repeat + novel

    bounded: bool | None = None
    if kind == SHAPE_GROWTH:
        grown = {s.metric for s in decisive}
        within_states = [s.state for s in within if s.metric in grown]
        if within_states:
            bounded = True if all(st == FLAT for st in within_states) else (False if GROWS in within_states else None)

    reasons.extend(s.describe(step) for s in decisive if s.state != FLAT)
    if kind == CLEAN:
        confidence = min((1.0 - max(0.0, _rise(s, bands)) for s in decisive), default=1.0)
    elif kind == INCONCLUSIVE:
        confidence = 0.5
    else:
        confidence = max(s.agreement for s in decisive)

    rep = by.get((HEAP, "repeat")) or by.get((metric, "repeat"))
    held = by.get((TENSORS, "repeat"))
    if held is not None and held.state != FLAT and (rep is None or rep.state == FLAT):
        rep = held  # growth under the bytes meters' floors that the exact tensor meter saw
    # On a GPU the host heap and the device are two memories: a tensor kept on the device every call
    # shows as a few KB of host bookkeeping and megabytes of device memory (seen on an H200: heap
    # +3.8 KB/call, cuda_allocated +16.8 MB/call). The headline is the larger of the two, and torch's
    # exact allocator count goes before NVML's coarse reading.
    device = next(
        (s for m in ("cuda_allocated", "gpu") if (s := by.get((m, "repeat"))) is not None and s.state == GROWS), None
    )
    if device is not None and (rep is None or rep.state == FLAT or device.rate > (rep.rate or 0.0)):
        rep = device
    nov = by.get((metric, "novel"))
    device_novel = next(
        (s for m in ("cuda_allocated", "gpu") if (s := by.get((m, "novel"))) is not None and s.state == GROWS), None
    )
    if device_novel is not None and (nov is None or nov.state == FLAT or device_novel.rate > (nov.rate or 0.0)):
        nov = device_novel  # per new shape as per call: the device's bytes when they outgrow the host's
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
        bounded=bounded,
        confidence=max(0.0, min(1.0, confidence)),
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


def needs_owners(verdict: Verdict, objects: bool = False) -> bool:
    """A per-call leak that only bytes show: whose it is takes a traced probe. Objects that grow
    are the model's, the control having subtracted the toolchain's own, except where the toolchain
    keeps objects of this very model (a scripted module's cloned parameters, pytorch/pytorch#82532):
    objects=True asks the traced probe about them too (their retention path and allocation site)."""
    if verdict.kind != LEAK:
        return False
    grown = {s.metric for s in verdict.signals if s.phase == "repeat" and s.state == GROWS}
    if objects:
        return bool(grown) and not grown & {"cuda_allocated", TENSORS}
    # Tensors Python reaches are counted exactly too (tracemalloc does not see their storage).
    return bool(grown) and not grown & {*COUNT_METRICS, TENSORS}


# torch's oneDNN primitive cache off, in the twin probe only (read when the cache is first built).
NATIVE_TWIN_ENV = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0"}


def needs_native_twin(verdict: Verdict, stage: str, device: str) -> bool:
    """Eager growth per new shape on the CPU that only bytes show: torch's primitive cache, or the
    model's native memory? (Objects that grow per shape are the model's: a cache it keeps.)"""
    if verdict.kind != SHAPE_GROWTH or stage != "eager" or device != "cpu":
        return False
    grown = {s.metric for s in verdict.signals if s.phase == "novel" and s.state == GROWS}
    return bool(grown) and not grown & set(COUNT_METRICS)


def attribute_shapes(verdict: Verdict, twin: Verdict | None) -> Verdict:
    """The verdict once the twin probe (oneDNN's primitive cache off) has run: growth per new shape
    that the twin does not show is the toolchain's, a toolchain-leak reported as torch's (like
    torch.fx's export growth), never the model's. A twin that still grows, or could not say, leaves
    the verdict as it was."""
    if twin is None or twin.kind != CLEAN:
        return verdict
    rate = verdict.growth_bytes_per_new_shape or 0.0
    left = max(0.0, twin.growth_bytes_per_new_shape or 0.0)
    reason = (
        f"torch's oneDNN primitive cache keeps ~{format_bytes(max(0.0, rate - left))} per new input shape "
        f"(bounded by its capacity, ONEDNN_PRIMITIVE_CACHE_CAPACITY, 1024 shapes by default); with it off the "
        f"model grows {format_bytes(left, signed=True)}/new shape (clean): not your model's code"
    )
    return replace(verdict, kind=TOOLCHAIN_LEAK, reasons=verdict.reasons + (reason,))


def attribute(
    verdict: Verdict,
    owners: Mapping[str, Any] | None,
    stage: str = "",
    control_owners: Mapping[str, Any] | None = None,
    objects: bool = True,
) -> Verdict:
    """The verdict once the traced probes have said who keeps the growth per call: a leak only for
    what the model's code owns; what the toolchain's files keep is a toolchain-leak.

    control_owners: the control's traced probe. Native bytes are the heap's growth above the
    control's minus the malloc'd Python growth above the control's: the exporter's own growth, in
    Python and natively, is in both probes (the relu control's is part native: ~1 KB of its
    ~10 KB per dynamo export)."""

    if not owners or "repeat" not in owners:
        return verdict
    per_call = dict(owners["repeat"])
    if control_owners and "repeat" in control_owners:
        control_python = float(control_owners["repeat"].get("python_malloc") or 0.0)
        per_call["python_malloc"] = float(per_call.get("python_malloc") or 0.0) - control_python
        heap_rate = verdict.growth_bytes_per_call if verdict.growth_metric == HEAP else None
    else:
        # No traced control: its growth is taken as all Python, the model's own heap rate compared.
        heap_rate = (
            verdict.growth_bytes_per_call + (verdict.baseline_bytes_per_call or 0.0)
            if verdict.growth_metric == HEAP and verdict.growth_bytes_per_call is not None
            else None
        )
    floor = verdict.floor_bytes_per_call or HEAP_ALLOCATION
    # Objects grew per call (above the control's) and the toolchain made and holds them all.
    # objects=False: a region's verdict (its question is whether it leaks alone; whose objects they
    # are is the stage's to say).
    theirs_objects = objects and toolchain_objects(per_call) and (verdict.objects_per_call or 0.0) >= 0.5
    mine = model_share(per_call, heap_rate, objects_theirs=theirs_objects)
    theirs = toolchain_share(per_call)
    kept = {**dict(owners), "repeat": {**dict(owners["repeat"]), "native": round(native_share(per_call, heap_rate))}}
    if control_owners and "repeat" in control_owners:
        kept["control"] = dict(control_owners["repeat"])
    if not needs_owners(verdict, objects=True):
        return replace(verdict, owners=kept)
    per = {"export": "export", "inference": "run"}.get(stage, "call")
    mine_objects, their_objects = object_owners(per_call)
    objects_grew = any(s.metric == "objects" and s.phase == "repeat" and s.state == GROWS for s in verdict.signals)
    if objects_grew and not theirs_objects:
        return replace(verdict, owners=kept)  # the model's objects (or none the tracer could place): a leak
    if mine > floor:
        site = top_site(per_call, MODEL)
        native = native_share(per_call, heap_rate)
        where = f", {site}" if site else (", native (no Python allocation explains it)" if native > floor else "")
        reason = f"the model's code keeps {format_bytes(mine)}/{per}{where}"
        return replace(verdict, owners=kept, reasons=verdict.reasons + (reason,))
    what = {"export": "torch.onnx.export", "inference": "ONNX Runtime", "eager": "torch"}.get(stage, "the toolchain")
    held = object_site(per_call) if theirs_objects else None
    if held:
        # The objects decide: torch allocated them and holds them (probe/objects.py).
        heap = verdict.growth_bytes_per_call or theirs
        reason = (
            f"{what} keeps {their_objects:g} object{'s' if their_objects != 1 else ''} (~{format_bytes(heap)}) per "
            f"{per} of this model: {held}; the model's code keeps {format_bytes(mine)} and {mine_objects:g} "
            f"objects/{per} (floor {format_bytes(floor)}): not your model's code"
        )
    else:
        site = top_site(per_call, TOOLCHAIN) or "the toolchain's own code"
        reason = (
            f"{what} keeps ~{format_bytes(theirs)} per {per} of this model in {site}; "
            f"the model's code keeps {format_bytes(mine)}/{per} (floor {format_bytes(floor)}): not your model's code"
        )
    return replace(verdict, kind=TOOLCHAIN_LEAK, owners=kept, reasons=(reason,), decided_by=HEAP)
