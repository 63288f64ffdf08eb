"""Operators the TorchScript exporter cannot export (``aten::diff``, which stops tiny GPT-2) or
exports into a graph ONNX Runtime refuses (CumSum on bool): register a symbolic built from
standard ONNX ops (fixers/onnx_symbolics.py), or, for an operator with no symbolic here, switch
to the torch.export-based exporter, which decomposes such operators itself.

The target is a stage that failed, not a curve: a kept candidate is one with which the stage
runs, and whose ONNX outputs match the eager model's.
"""

from __future__ import annotations

from bisector.fixers.base import UNSUPPORTED_OP, Candidate, Example, FixTarget
from bisector.fixers.onnx_symbolics import SYMBOLICS


class MissingSymbolic:
    name = "missing-symbolic"
    description = "register a symbolic for an operator the TorchScript exporter lacks (aten::diff), or switch exporter"
    stages = ("export", "inference")
    kinds = (UNSUPPORTED_OP,)

    def propose(self, target: FixTarget) -> list[Candidate]:
        named = [op for op in target.figures.get("operators", ()) if op in SYMBOLICS]
        out = []
        if target.exporter == "torchscript":
            if named:
                out.append(
                    Candidate(
                        self.name,
                        f"register a symbolic for {', '.join(named)} (standard ONNX ops)",
                        probe={"export_kwargs": {"symbolics": named}},
                        size=len(named),
                    )
                )
                # Fixing one operator often uncovers the next (GPT-2: aten::diff, then CumSum on
                # bool): the whole registry as one candidate, ranked below the smaller one.
                every = list(dict.fromkeys(named + list(SYMBOLICS)))
                if every != named:
                    out.append(
                        Candidate(
                            self.name,
                            f"register symbolics for {', '.join(every)} (standard ONNX ops)",
                            probe={"export_kwargs": {"symbolics": every}},
                            size=len(every),
                        )
                    )
            else:
                # No symbolic here for it: the bigger change, another exporter (with its own graph
                # and its own per-export cost, measured like everything else).
                out.append(
                    Candidate(
                        self.name,
                        "export with the torch.export-based exporter (dynamo=True), which decomposes the operator",
                        probe={"exporter": "dynamo"},
                        size=len(SYMBOLICS) + 1,
                    )
                )
        return out

    examples = (
        Example(
            "aten::diff under the TorchScript exporter",
            FixTarget("export", UNSUPPORTED_OP, exporter="torchscript", figures={"operators": ["aten::diff"]}),
            True,
            "aten::",
        ),
        Example(
            "an operator bisector has no symbolic for: switch exporter",
            FixTarget("export", UNSUPPORTED_OP, exporter="torchscript", figures={"operators": ["aten::stft"]}),
            True,
            "dynamo",
        ),
        Example(
            "the default exporter has no symbolic table",
            FixTarget("export", UNSUPPORTED_OP, exporter="dynamo", figures={"operators": ["aten::diff"]}),
            False,
        ),
        Example("a leak is not a missing operator", FixTarget("export", "leak", exporter="torchscript"), False),
    )


FIXER = MissingSymbolic()
