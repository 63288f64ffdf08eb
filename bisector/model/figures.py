"""What one measurement says of a model or a region in one stage: its figures.

A frozen dataclass read by name (``figures.growth_bytes_per_call``). It is also a read-only
Mapping of the fields that were set, for the JSON documents that carry figures (a culprit's, a
fix's before and after) and for the code that combines them key by key (search.py): a field never
set is absent from ``dict(figures)``, so a document carries what was measured and nothing more.
No dependencies: search.py, which knows nothing of torch, uses it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any


class _Unset:
    """The default of every field: "not measured", apart from None ("measured: none")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Figures(Mapping[str, Any]):
    # Growth per repeated call and per new input shape (bytes on the metric that decided, and
    # Python objects, counted exactly), and whether shape growth stops at the largest shape.
    growth_bytes_per_call: float | None = UNSET
    growth_bytes_per_new_shape: float | None = UNSET
    objects_per_call: float | None = UNSET
    objects_per_new_shape: float | None = UNSET
    bounded: bool | None = UNSET
    noise_bytes: float | None = UNSET
    growth_metric: str | None = UNSET  # rss, uss, heap or tensors: the bytes metric that decided
    decided_by: str | None = UNSET  # the metric whose signal settled the verdict (charts draw it)
    floor_bytes_per_call: float | None = UNSET  # the smallest growth per call this run could see
    error_bytes_per_call: float | None = UNSET  # the 95% interval (+-) of the heap's growth per call
    owners: Mapping[str, Any] | None = UNSET  # who owns heap growth (owners.py)
    exact: bool = UNSET  # judged on object counts alone (bytes did not grow)
    repeat_steps: int = UNSET
    novel_steps: int = UNSET
    top_types: Mapping[str, int] = UNSET  # the types whose count grew most, above the control's
    # Memory in place before the measured calls, the control's, the largest RSS over the schedule,
    # and the GPU working set at its largest: a fix's trade-off is shown against these.
    rss_before_loop: float | None = UNSET
    control_rss_before_loop: float | None = UNSET
    rss_peak: float | None = UNSET
    peak_gpu_bytes: float | None = UNSET
    # The curves themselves, for the HTML report's charts.
    samples: tuple[Mapping[str, Any], ...] | list[Any] = UNSET
    control_samples: tuple[Mapping[str, Any], ...] | list[Any] = UNSET
    # A region named for what it leaks beyond its children (search.py): its own share above, and
    # what the region leaks alone, children included, here.
    beyond_children: bool = UNSET
    region_objects_per_call: float | None = UNSET
    region_objects_per_new_shape: float | None = UNSET
    # A stage that could not export: the operators the exporter lacks (failures.py).
    operators: tuple[str, ...] | list[str] = UNSET
    # What holds a Python-level culprit's growth: retention paths (retention.py), biggest first.
    retention: tuple[Mapping[str, Any], ...] | list[Any] = UNSET

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> Figures:
        """From a mapping (JSON, or another Figures); a key that is no field is an error, not lost."""
        if isinstance(data, Figures):
            return data
        data = dict(data or {})
        unknown = sorted(set(data) - _NAMES)
        if unknown:
            raise KeyError(f"not a figure: {', '.join(unknown)}")
        return cls(**data)

    def with_(self, **changes: Any) -> Figures:
        """These figures with some set or changed (not dataclasses.replace: it would read the
        unset fields as None and set them)."""
        return Figures.of({**dict(self), **changes})

    def to_json(self) -> dict[str, Any]:
        return dict(self)

    # -- the read-only Mapping of the fields that were set ------------------------------------------

    def __getitem__(self, key: str) -> Any:
        value = object.__getattribute__(self, key) if key in _NAMES else UNSET
        if value is UNSET:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name for name in _ORDER if object.__getattribute__(self, name) is not UNSET)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __getattribute__(self, name: str) -> Any:
        # A field never set reads as None by name; UNSET only keeps it out of the mapping.
        value = object.__getattribute__(self, name)
        return None if value is UNSET else value

    def __repr__(self) -> str:
        return f"Figures({', '.join(f'{k}={v!r}' for k, v in self.items())})"


_ORDER = tuple(f.name for f in fields(Figures))
_NAMES = frozenset(_ORDER)
