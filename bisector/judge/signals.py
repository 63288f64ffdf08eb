"""The signals a verdict is made of: one metric over one phase, grows, flat or unsure.

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
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bisector.common.units import format_bytes

GROWS, FLAT, UNSURE = "grows", "flat", "unsure"

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
