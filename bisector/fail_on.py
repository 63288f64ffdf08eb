"""Which findings fail a run (exit 1): the `--fail-on` policy of measure, find, fix, repair and the
pytest plugin.

A policy is a list of kinds, e.g. ``leak,shape-growth:unbounded``:

- ``leak``: grows on every call;
- ``shape-growth``: grows per new input shape, bounded or not; ``shape-growth:unbounded`` only when
  it keeps growing past the largest shape seen, ``shape-growth:bounded`` only when it stops there;
- ``toolchain-leak``: growth that torch or ONNX Runtime own (reported, not counted, by default);
- ``inconclusive``: a stage that could not be judged (exit 4 by default, exit 1 when listed).

The default is today's rule: ``leak,shape-growth``. A finding the policy does not list is reported
as usual and does not fail the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bisector.errors import UserError
from bisector.kinds import Kind

BOUNDED, UNBOUNDED = f"{Kind.SHAPE_GROWTH}:bounded", f"{Kind.SHAPE_GROWTH}:unbounded"
KINDS = (Kind.LEAK, Kind.SHAPE_GROWTH, BOUNDED, UNBOUNDED, Kind.TOOLCHAIN_LEAK, Kind.INCONCLUSIVE)
DEFAULT = (Kind.LEAK, Kind.SHAPE_GROWTH)


@dataclass(frozen=True)
class FailOn:
    kinds: frozenset[str] = frozenset(DEFAULT)

    @classmethod
    def parse(cls, values: Iterable[str] | str | None) -> FailOn:
        """From `--fail-on` values (repeatable, each comma-separated); None or empty: the default."""
        if isinstance(values, str):
            values = [values]
        tokens = [t.strip() for v in (values or ()) for t in str(v).split(",") if t.strip()]
        if not tokens:
            return cls()
        unknown = [t for t in tokens if t not in KINDS]
        if unknown:
            raise UserError(f"--fail-on {unknown[0]!r}: use a comma-separated list of {', '.join(KINDS)}")
        return cls(frozenset(tokens))

    def fails(self, kind: str, bounded: bool | None = None) -> bool:
        """Whether a finding of this kind fails the run. `bounded`: for shape growth, whether the
        growth stopped at the largest shape (None: not known, counted as unbounded)."""
        if kind == Kind.SHAPE_GROWTH:
            if Kind.SHAPE_GROWTH in self.kinds:
                return True
            which = BOUNDED if bounded else UNBOUNDED
            return which in self.kinds
        return kind in self.kinds

    def to_json(self) -> list[str]:
        return sorted(self.kinds)
