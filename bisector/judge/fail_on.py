"""Which findings fail a run (exit 1): the `--fail-on` policy of measure, find, fix, repair and the
pytest plugin.

A policy is a list of kinds, e.g. ``leak,shape-growth:unbounded``:

- ``leak``: grows on every call;
- ``shape-growth``: grows per new input shape, bounded or not; ``shape-growth:unbounded`` only when
  it keeps growing past the largest shape seen, ``shape-growth:bounded`` only when it stops there;
- ``toolchain-leak``: growth that torch or ONNX Runtime own (reported, not counted, by default);
- ``inconclusive``: a stage that could not be judged (exit 4 by default, exit 1 when listed).

The default is ``leak,shape-growth:unbounded``: bounded shape-growth (ONNX Runtime's arena growing
to the largest declared input) is expected behaviour, reported with its ceiling (ceiling.py) and
not counted. A ``budget`` (``--budget SIZE``) judges that ceiling: shape-growth whose projected
peak at the largest declared input is above it fails the run, whatever the kinds listed. A finding
the policy does not list is reported as usual and does not fail the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from bisector.common.errors import UserError
from bisector.common.units import parse_size
from bisector.model.kinds import Kind

BOUNDED, UNBOUNDED = f"{Kind.SHAPE_GROWTH}:bounded", f"{Kind.SHAPE_GROWTH}:unbounded"
KINDS = (Kind.LEAK, Kind.SHAPE_GROWTH, BOUNDED, UNBOUNDED, Kind.TOOLCHAIN_LEAK, Kind.INCONCLUSIVE)
DEFAULT = (Kind.LEAK, UNBOUNDED)


@dataclass(frozen=True)
class FailOn:
    kinds: frozenset[str] = frozenset(DEFAULT)
    budget: float | None = None  # bytes: the projected peak that shape-growth must stay under

    @classmethod
    def parse(cls, values: Iterable[str] | str | None, budget: str | float | None = None) -> FailOn:
        """From `--fail-on` values (repeatable, each comma-separated); None or empty: the default.
        budget: `--budget` ("2GB"; None: no budget)."""
        limit = parse_budget(budget)
        if isinstance(values, str):
            values = [values]
        tokens = [t.strip() for v in (values or ()) for t in str(v).split(",") if t.strip()]
        if not tokens:
            return cls(budget=limit)
        unknown = [t for t in tokens if t not in KINDS]
        if unknown:
            raise UserError(f"--fail-on {unknown[0]!r}: use a comma-separated list of {', '.join(KINDS)}")
        return cls(frozenset(tokens), limit)

    def with_budget(self, budget: str | float | None) -> FailOn:
        """This policy with a budget, where one is given (a flag's over the config's)."""
        limit = parse_budget(budget)
        return self if limit is None else replace(self, budget=limit)

    def over_budget(self, peak: float | None) -> bool:
        return self.budget is not None and peak is not None and peak > self.budget

    def fails(self, kind: str, bounded: bool | None = None, peak: float | None = None) -> bool:
        """Whether a finding of this kind fails the run. `bounded`: for shape growth, whether the
        growth stopped at the largest shape (None: not known, counted as unbounded). `peak`: its
        projected peak at the largest declared input (bytes), judged against the budget."""
        if kind == Kind.SHAPE_GROWTH:
            if self.over_budget(peak):
                return True
            if Kind.SHAPE_GROWTH in self.kinds:
                return True
            which = BOUNDED if bounded else UNBOUNDED
            return which in self.kinds
        return kind in self.kinds

    def to_json(self) -> list[str]:
        return sorted(self.kinds)


def parse_budget(value: str | float | None) -> float | None:
    """`--budget SIZE` in bytes (None: no budget); a size that is not positive is a user error."""
    if value is None or value == "":
        return None
    size = parse_size(value, "--budget")
    if size <= 0:
        raise UserError(f"--budget {value}: the budget must be a positive size, e.g. 2GB")
    return float(size)
