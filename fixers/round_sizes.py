"""Round dynamic sizes up to a multiple of 16 (seed article: "for convolution models round
dynamic sizes to multiples of 16 for memory reuse"): inputs are zero-padded up, outputs cropped
back, so the runtime sees far fewer distinct shapes. Padding changes what a convolution sees at
the border, so outputs may differ: the candidate is labelled and kept only with opt-in
(``--allow-output-changes``)."""

from __future__ import annotations

from bisector.fixers.base import SHAPE_GROWTH, Candidate, Example, FixTarget

MULTIPLE = 16


class RoundSizes:
    name = "round-sizes"
    description = f"pad dynamic input sizes up to multiples of {MULTIPLE} (outputs cropped back)"
    stages = ("inference",)
    kinds = (SHAPE_GROWTH,)

    def __init__(self, multiple: int = MULTIPLE) -> None:
        self.multiple = multiple

    def propose(self, target: FixTarget) -> list[Candidate]:
        if target.fixed_inputs or not target.dims:
            return []
        syms = [s for s, (lo, hi) in target.dims.items() if lo != hi]
        if not syms:
            return []
        return [
            Candidate(
                self.name,
                f"round {', '.join(syms)} up to multiples of {self.multiple} (zero padding, outputs cropped back)",
                probe={"input_transform": f"round:{self.multiple}"},
                changes_outputs=True,
                size=len(syms),
            )
        ]

    examples = (
        Example(
            "dynamic batch and size",
            FixTarget("inference", SHAPE_GROWTH, dims={"B": (1, 16), "H": (5, 100)}),
            True,
            "multiples of 16",
        ),
        Example(
            "fixed inputs have nothing to round",
            FixTarget("inference", SHAPE_GROWTH, dims={"B": (4, 4)}, fixed_inputs=True),
            False,
        ),
        Example("a per-run leak is not about shapes", FixTarget("inference", "leak", dims={"B": (1, 16)}), False),
    )


FIXER = RoundSizes()
