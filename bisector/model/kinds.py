"""What a stage or a region was found to be: one vocabulary for verdicts, stage outcomes and culprits.

Members are strings equal to their values ("leak" == Kind.LEAK), so JSON output, dict keys and
comparisons with kinds read back from JSON are unchanged. Stdlib only: fixers and the search use it.
"""

from __future__ import annotations

from bisector.common.strenum import StrEnum


class Kind(StrEnum):
    CLEAN = "clean"
    LEAK = "leak"
    SHAPE_GROWTH = "shape-growth"
    INCONCLUSIVE = "inconclusive"
    # Growth per call that torch or ONNX Runtime own (their files keep it), not the model's code.
    TOOLCHAIN_LEAK = "toolchain-leak"
    FAILED = "failed"  # the probe raised: the model cannot run or export
    CRASHED = "crashed"  # the probe died, hung or hit the memory cap
    # Not a memory finding: the stage could not run because the exporter lacks (or mis-emits) an
    # operator. A culprit's kind; a fixer that makes it export is measured like any other.
    UNSUPPORTED_OP = "unsupported-op"

    @property
    def severity(self) -> float:
        return SEVERITY[self]


# Worst first: the overall verdict of a report is the worst of its stages. A stage that did not
# measure ranks above inconclusive (its model never ran), below a finding. A toolchain leak ranks
# with clean for the model: exit codes speak of the user's model (see cli.exit_code).
SEVERITY: dict[str, float] = {
    Kind.LEAK: 3,
    Kind.SHAPE_GROWTH: 2,
    Kind.FAILED: 1.5,
    Kind.CRASHED: 1.5,
    Kind.UNSUPPORTED_OP: 1.5,
    Kind.INCONCLUSIVE: 1,
    Kind.TOOLCHAIN_LEAK: 0.5,
    Kind.CLEAN: 0,
}


def severity(kind: str) -> float:
    """A kind's severity; a string no kind spells (say, from an older report) ranks with clean."""
    return SEVERITY.get(kind, 0)


def worst(kinds: list[str]) -> str:
    return max(kinds, key=severity, default=Kind.CLEAN)
