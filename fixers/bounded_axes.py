"""Bounded dynamic axes: the exported graph's dynamic dims limited to the declared range
(seed article: "define the variable dimensions' range"). For the torch.export-based exporter,
``dynamic_shapes`` with ``torch.export.Dim(name, min=, max=)``; for the TorchScript-based one,
named ``dynamic_axes`` plus an input guard that rejects sizes outside the range before they reach
the runtime."""

from __future__ import annotations

from bisector.fixers.base import SHAPE_GROWTH, Candidate, Example, FixTarget


class BoundedAxes:
    name = "bounded-axes"
    description = "bound the exported dynamic dims to the declared ranges (Dim(min, max) / named dynamic_axes + guard)"
    stages = ("inference",)
    kinds = (SHAPE_GROWTH,)

    def propose(self, target: FixTarget) -> list[Candidate]:
        ranges = {s: [lo, hi] for s, (lo, hi) in target.dims.items() if lo != hi}
        if not ranges:
            return []
        how = "torch.export.Dim(min, max)" if target.exporter == "dynamo" else "named dynamic_axes and an input guard"
        text = ", ".join(f"{s} in {lo}..{hi}" for s, (lo, hi) in ranges.items())
        return [
            Candidate(
                self.name,
                f"bound the dynamic dims ({text}) with {how}",
                probe={"export_kwargs": {"bounded_dims": ranges}},
                size=len(ranges),
            )
        ]

    examples = (
        Example(
            "dynamic batch and size",
            FixTarget("inference", SHAPE_GROWTH, dims={"B": (1, 16), "H": (5, 100)}),
            True,
            "B in 1..16",
        ),
        Example("fixed sizes have nothing to bound", FixTarget("inference", SHAPE_GROWTH, dims={"B": (4, 4)}), False),
    )


FIXER = BoundedAxes()
