"""Whose growth it is: a verdict once the traced probes, or the native twin, have said who keeps
the growth.

A per-call leak seen only in bytes has an owner (see owners.py): growth that a traced probe puts in
torch's or ONNX Runtime's own files is a ``toolchain-leak``, reported as theirs, never the model's.
Eager growth per new shape seen only in bytes (no object of the model's grew) is measured once more
with torch's oneDNN primitive cache off (``NATIVE_TWIN_ENV``): a cache of ~100 KB per new conv
shape, bounded by its capacity (1024 by default), that no trivial control exercises. Growth that
goes away then is the toolchain's too (``attribute_shapes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from bisector.common.units import format_bytes
from bisector.judge.owners import (
    LIBRARIES,
    MODEL,
    TOOLCHAIN,
    model_share,
    native_share,
    native_split,
    object_owners,
    object_site,
    toolchain_objects,
    toolchain_share,
    top_site,
)
from bisector.judge.signals import COUNT_METRICS, GROWS, HEAP, HEAP_ALLOCATION, TENSORS
from bisector.judge.verdict import CLEAN, INCONCLUSIVE, LEAK, SHAPE_GROWTH, TOOLCHAIN_LEAK, Verdict


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


def _per_call(
    verdict: Verdict, owners: Mapping[str, Any], control_owners: Mapping[str, Any] | None
) -> tuple[dict[str, Any], float | None]:
    """The traced probe's per-call figures less the control's Python growth, and the heap rate
    they are weighed against (None where the heap did not decide the growth)."""
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
    return per_call, heap_rate


# How many more new objects the traced span may leave than the verdict's steady count per call,
# for the traced objects still to be taken as the ones that persist (see traced_objects_persist).
OBJECT_AGREEMENT = 4.0


def traced_objects_persist(per_call: Mapping[str, Any], objects_per_call: float | None) -> bool:
    """Whether the objects the traced span left are the ones that grow per call: the steady count
    grows (>= 0.5 per call) and the traced count is of its order. A scripted module's export keeps
    its cloned parameters (pytorch/pytorch#82532): ~2 traced, 2 per export. A dynamo export leaves
    ~2,800 new objects in its one traced span (op signatures, caches it fills) while the steady count
    wanders between -2 and 2: those objects say nothing of whose the native bytes are, and giving
    them to the toolchain on a wander up blamed torch for a model's own malloc (export_native.py,
    native_leak.py: 8 of 16 export measurements)."""
    steady = float(objects_per_call or 0.0)
    _, traced = object_owners(per_call)
    return steady >= 0.5 and traced <= OBJECT_AGREEMENT * max(steady, 1.0)


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
    per_call, heap_rate = _per_call(verdict, owners, control_owners)
    floor = verdict.floor_bytes_per_call or HEAP_ALLOCATION
    # Objects grew per call (above the control's) and the toolchain made and holds them all.
    # objects=False: a region's verdict (its question is whether it leaks alone; whose objects they
    # are is the stage's to say).
    placed = objects and toolchain_objects(per_call)
    theirs_objects = placed and traced_objects_persist(per_call, verdict.objects_per_call)
    mine = model_share(per_call, heap_rate, objects_theirs=theirs_objects)
    kept = {**dict(owners), "repeat": {**dict(owners["repeat"]), "native": round(native_share(per_call, heap_rate))}}
    if control_owners and "repeat" in control_owners:
        kept["control"] = dict(control_owners["repeat"])
    if not needs_owners(verdict, objects=True):
        return replace(verdict, owners=kept)
    per = {"export": "export", "inference": "run"}.get(stage, "call")
    objects_grew = any(s.metric == "objects" and s.phase == "repeat" and s.state == GROWS for s in verdict.signals)
    if objects_grew and not placed:
        return replace(verdict, owners=kept)  # the model's objects (or none the tracer could place): a leak
    if mine > floor:
        site = top_site(per_call, MODEL)
        native = native_share(per_call, heap_rate)
        where = f", {site}" if site else (", native (no Python allocation explains it)" if native > floor else "")
        reason = f"the model's code keeps {format_bytes(mine)}/{per}{where}"
        return replace(verdict, owners=kept, reasons=verdict.reasons + (reason,))
    reason = _toolchain_reason(verdict, per_call, stage, per, mine, floor, theirs_objects)
    return replace(verdict, kind=TOOLCHAIN_LEAK, owners=kept, reasons=(reason,), decided_by=HEAP)


def _toolchain_reason(
    verdict: Verdict, per_call: Mapping[str, Any], stage: str, per: str, mine: float, floor: float, by_objects: bool
) -> str:
    """Why the growth is the toolchain's: the objects it holds of this model (by_objects: probe/objects.py
    placed them), else the bytes its own files keep."""
    what = {"export": "torch.onnx.export", "inference": "ONNX Runtime", "eager": "torch"}.get(stage, "the toolchain")
    theirs = toolchain_share(per_call)
    held = object_site(per_call) if by_objects else None
    if held:
        # The objects decide: torch allocated them and holds them (probe/objects.py).
        mine_objects, their_objects = object_owners(per_call)
        heap = verdict.growth_bytes_per_call or theirs
        return (
            f"{what} keeps {their_objects:g} object{'s' if their_objects != 1 else ''} (~{format_bytes(heap)}) per "
            f"{per} of this model: {held}; the model's code keeps {format_bytes(mine)} and {mine_objects:g} "
            f"objects/{per} (floor {format_bytes(floor)}): not your model's code"
        )
    site = top_site(per_call, TOOLCHAIN) or "the toolchain's own code"
    return (
        f"{what} keeps ~{format_bytes(theirs)} per {per} of this model in {site}; "
        f"the model's code keeps {format_bytes(mine)}/{per} (floor {format_bytes(floor)}): not your model's code"
    )


# A leak that only native bytes explain is measured on a second schedule when it is under twice the
# target or twice WANDER, whichever is larger: torch's own native wander per call reached +574 B on a
# clean GPT-2 block (bench/sensitivity.py, December 2026), so past 2 KB it cannot produce a leak, and
# a leak a few times the target is no wander of a size the target was set to ignore.
SECOND_SCHEDULE_BELOW = 2.0
WANDER = 1024.0


def needs_second_schedule(verdict: Verdict, target: float, stage: str = "") -> bool:
    """A small per-call leak the traced probe could place nowhere: no Python allocation of the
    model's, and no native stack (none ran, or none saw it). Its bytes go to the model by default
    (owners.model_share), but torch's own native growth for some models wanders to a few hundred
    bytes a call on some input shapes and not on others: a clean GPT-2 block grew +402 B/call on one
    schedule (seed 0) in two sessions, and 0-270 B/call on the other four. At a low target that is
    a false leak, so it is measured once more on another schedule first. A model's own native leak
    grows on every schedule.

    Not in export: the wander was measured in eager and inference (bench/sensitivity.py), and an
    export's growth is mostly Python objects that torch's files allocate for the model (hooks it
    registers per call: forward_hook's +33 KB/export, near twice the 16 KB target), which a second,
    noisier schedule could only lose."""
    if stage == "export" or verdict.kind != LEAK or not target or not verdict.owners or "repeat" not in verdict.owners:
        return False
    growth = verdict.growth_bytes_per_call or 0.0
    if verdict.growth_metric != HEAP or growth >= SECOND_SCHEDULE_BELOW * max(target, WANDER):
        return False
    rep = verdict.owners["repeat"]
    groups = rep.get("groups") or {}
    # Python allocations of the model's code or its libraries (transformers' small ones always show
    # up with a site) that would explain the growth make it no wander of torch's.
    python = float(groups.get(MODEL) or 0.0) + float(groups.get(LIBRARIES) or 0.0)
    return not native_split(rep) and python < 0.5 * growth


def grew_again(second: Verdict, target: float) -> bool:
    """The second schedule shows the leak: a leak verdict, or heap growth above its floor that the
    target cannot excuse (its 95% interval reaches the target) though not in enough passes to be
    sure: the question is whether it is there at all, which the first schedule was sure of."""
    if second.kind == LEAK:
        return True
    rate, floor = second.growth_bytes_per_call, second.floor_bytes_per_call
    if second.growth_metric != HEAP or rate is None or floor is None:
        return False
    return rate > floor and rate + (second.error_bytes_per_call or 0.0) >= target


def second_schedule(
    first: Verdict, second: Verdict | None, seed: int, per: str = "call", target: float = 0.0
) -> Verdict:
    """The leak once measured again on another schedule (needs_second_schedule): growing again
    (grew_again) keeps the verdict; anything else makes it inconclusive, with the growth on each
    schedule stated as this model's own per-call wander under the toolchain, and the floor the
    first schedule's upper bound."""
    grew = first.growth_bytes_per_call or 0.0
    err = first.error_bytes_per_call or 0.0
    if second is None:
        return replace(first, reasons=first.reasons + ("could not be measured on a second schedule",))
    again = format_bytes(second.growth_bytes_per_call or 0.0, signed=True)
    if grew_again(second, target):
        reason = f"grew again on a second schedule (seed {seed}): {again}/{per}"
        return replace(first, reasons=first.reasons + (reason,))
    reason = (
        f"not seen again on a second schedule (seed {seed}: {again}/{per}, {second.kind}); no Python allocation "
        f"and no native stack explains it: this model's own per-{per} growth under the toolchain wanders "
        f"between {again} and {format_bytes(grew, signed=True)}/{per} with the input shapes, so a leak under "
        f"~{format_bytes(grew + err)}/{per} cannot be told from it"
    )
    return replace(
        first,
        kind=INCONCLUSIVE,
        floor_bytes_per_call=max(first.floor_bytes_per_call or 0.0, grew + err),
        reasons=first.reasons + (reason,),
    )
