"""Simplify the exported graph with onnxsim: constant-fold shape subgraphs (Shape -> Gather ->
Concat chains that make the runtime plan memory per shape), also with the input shapes fixed
where the user's inputs are fixed."""

from __future__ import annotations

from bisector.fixers.base import LEAK, SHAPE_GROWTH, Candidate, Example, FixTarget


class OnnxsimFold:
    name = "onnxsim"
    description = "simplify the exported graph with onnxsim (constant folding of shape subgraphs)"
    stages = ("inference",)
    kinds = (LEAK, SHAPE_GROWTH)

    def propose(self, target: FixTarget) -> list[Candidate]:
        out = [Candidate(self.name, "run onnxsim.simplify on the exported graph", probe={"post_export": ["onnxsim"]})]
        if target.fixed_inputs:
            out.append(
                Candidate(
                    self.name,
                    "run onnxsim.simplify with the fixed input shapes",
                    probe={"post_export": ["onnxsim-fixed"]},
                    size=2,
                )
            )
        return out

    examples = (
        Example("dynamic inputs", FixTarget("inference", SHAPE_GROWTH, dims={"B": (1, 16)}), True, "onnxsim"),
        Example("fixed inputs", FixTarget("inference", LEAK, fixed_inputs=True), True, "fixed input shapes"),
        Example("an eager leak", FixTarget("eager", LEAK), False),
    )


FIXER = OnnxsimFold()
