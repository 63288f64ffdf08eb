"""The retry policy: an unsure verdict is asked again with twice the iterations, and a clean
verdict whose detection floor is above the stage's target is chased with more passes, within the
stage's time budget."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bisector.common.units import format_bytes
from bisector.judge.signals import HEAP
from bisector.judge.verdict import CLEAN, Verdict
from bisector.lab.results import MeasureOptions


def floor_short(verdict: Verdict | None, options: MeasureOptions, stage: str) -> str | None:
    """Why a clean verdict is not yet good enough: its heap floor is above the stage's target."""
    if verdict is None or verdict.kind != CLEAN or verdict.growth_metric != HEAP:
        return None
    target = options.floor_targets.get(stage)
    floor = verdict.floor_bytes_per_call
    if target is None or floor is None or floor <= target:
        return None
    return f"detection floor {format_bytes(floor)}/call is above the target {format_bytes(target)}"


# The most passes a floor chase asks for in one attempt, as a multiple of the profile's: past it the
# schedule's own length (and the probe's timeout) matter more than the floor.
MAX_SCALE = 256
# A floor that a doubling of the passes lowered by less than this share is held up by the noise,
# which more passes raise with them: the chase stops there.
MIN_GAIN = 0.1


def scale_for(floor: float, target: float, scale: int) -> int:
    """The passes (as a scale of the profile's) that bring this floor to the target: the floor
    falls as 1/sqrt(passes) while the spread holds (the standard error of the median)."""
    need = scale * (floor / target) ** 2
    return min(MAX_SCALE, max(scale + 1, math.ceil(need * 1.1)))  # 10%: the spread wanders


def budget_note(
    verdict: Verdict, target: float, scale: int, took_s: float, per: str = "call", noise_held: bool = False
) -> str:
    """What a chase that stopped before the target left: the floor reached, how long the target
    would take (or that more passes did not lower it), and the model's own per-call noise."""
    floor = verdict.floor_bytes_per_call or 0.0
    if noise_held:
        note = f"floor reached {format_bytes(floor)}/{per}; more passes did not lower it (the noise grew with them)"
    else:
        need = scale * (floor / target) ** 2 if target else float("inf")
        eta = took_s / scale * need
        note = (
            f"floor reached {format_bytes(floor)}/{per} in the stage budget; the target {format_bytes(target)} "
            f"would take ~{need:.0f}x the passes (~{eta / 60:.0f} min)"
        )
    own = verdict.model_noise_bytes_per_call
    if own is not None:
        note += f"; this model's own per-{per} noise under the toolchain is ±{format_bytes(own)}"
    return note


@dataclass(frozen=True)
class Attempt:
    """One try of a retry loop: its result, and whether it ends the loop whatever the verdict."""

    value: Any
    verdict: Verdict | None
    final: bool = False


def retrying(
    attempt: Callable[[int, int], Attempt],
    settled: Callable[[Attempt], bool],
    retries: int,
    budget_s: float | None = None,
    chase: Callable[[Attempt, int], int | None] | None = None,
) -> Attempt:
    """Try at scale 1, 2, 4, ... (twice the iterations each time), up to ``retries`` reruns, until
    an attempt is final or settled, or the time budget is spent.

    chase: for an attempt that is settled but for its floor, the scale the target needs (0: no
    more passes would lower it), or None (not a floor to chase: a rerun as above). A chase is
    bound by the budget, not by ``retries``: its scale is cut to what the time left allows,
    judged by the last attempt's time per scale."""
    started = time.perf_counter()
    result: Attempt | None = None
    scale, reruns = 1, 0
    for n in range(retries + 16):  # 16: a chase's attempts, bounded by the budget too
        begun = time.perf_counter()
        result = attempt(n, scale)
        if result.final or settled(result):
            break
        took = time.perf_counter() - begun
        wanted = chase(result, scale) if chase is not None else None
        if wanted is None:
            reruns += 1
            if reruns > retries or (budget_s is not None and time.perf_counter() - started > budget_s):
                break
            scale *= 2
            continue
        if budget_s is not None:
            left = budget_s - (time.perf_counter() - started)
            wanted = min(wanted, int(left / max(took / scale, 1e-9)))
        if wanted <= scale:
            break
        scale = wanted
    assert result is not None
    return result
