"""Where a find or a fix spends its time: wall-clock spans per phase, recorded as they run.

A `Stopwatch` is shared by a lab and every lab derived from it (each fix candidate's), so one
model's spans land in one place from every thread. `PhaseTimes` is the frozen snapshot results
carry. Phases (PHASES) run side by side in threads, so their totals may add up to more than the
wall; "trace" (the traced probes that name who owns heap growth) runs inside "verdict" and "search".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# The phases a fix meets, in order: each stage's verdict (the whole model and its control), the
# traced probes inside it, the search by regions; per fix candidate its build (shadow copy, lab),
# its measurement (the culprit's stage, whole and region: exports included) and the comparison of
# its outputs; the candidate measured again with another seed; the project's check command; and
# the re-measurement of what --apply wrote.
PHASES = ("verdict", "trace", "search", "build", "measure", "equivalence", "confirm", "check")


@dataclass(frozen=True)
class Span:
    phase: str
    label: str  # what ran: the stage, the candidate ("append-only eager")
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "label": self.label, "seconds": round(self.seconds, 2)}


@dataclass(frozen=True)
class PhaseTimes:
    spans: tuple[Span, ...] = ()

    def totals(self) -> dict[str, float]:
        """Seconds per phase (PHASES' order, then any other), summed over spans."""
        out: dict[str, float] = {}
        for s in self.spans:
            out[s.phase] = out.get(s.phase, 0.0) + s.seconds
        order = {p: i for i, p in enumerate(PHASES)}
        return {p: round(out[p], 2) for p in sorted(out, key=lambda p: (order.get(p, len(PHASES)), p))}

    def plus(self, other: PhaseTimes | Iterable[Span]) -> PhaseTimes:
        more = other.spans if isinstance(other, PhaseTimes) else tuple(other)
        return PhaseTimes(self.spans + more)

    def to_json(self) -> dict[str, Any]:
        return {"totals": self.totals(), "spans": [s.to_json() for s in self.spans]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> PhaseTimes:
        spans = (data or {}).get("spans") or ()
        return cls(tuple(Span(str(s["phase"]), str(s.get("label", "")), float(s["seconds"])) for s in spans))


def summed(times: Iterable[PhaseTimes]) -> dict[str, float]:
    """Seconds per phase over many models (the repair summary's totals)."""
    return PhaseTimes(tuple(s for t in times for s in t.spans)).totals()


class Stopwatch:
    """Records spans from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []

    def add(self, phase: str, label: str, seconds: float) -> None:
        with self._lock:
            self._spans.append(Span(phase, label, seconds))

    @contextmanager
    def phase(self, phase: str, label: str = "") -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, label, time.perf_counter() - started)

    def snapshot(self) -> PhaseTimes:
        with self._lock:
            return PhaseTimes(tuple(self._spans))
