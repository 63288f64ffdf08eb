"""Export in a child process: a workaround for growth the exporter itself keeps on every export
(a toolchain-leak: pytorch/pytorch#82532 for a scripted module under the TorchScript exporter,
torch.fx keeping each graph's generated source under torch.export). A service or a CI job that
exports many times in one process stays flat when each export runs in a forked child: what the
exporter keeps goes away with it. The patch wraps the script's ``torch.onnx.export`` call in a
helper (or writes export_onnx.py with it), its comment naming the upstream bug when known."""

from __future__ import annotations

from bisector.fixers._upstream import works_around
from bisector.fixers.base import LEAK, TOOLCHAIN_LEAK, Candidate, Example, FixTarget


class ExportInChild:
    name = "export-in-child"
    description = "run each torch.onnx.export in a child process, for growth the exporter itself keeps"
    stages = ("export",)
    kinds = (TOOLCHAIN_LEAK,)

    def propose(self, target: FixTarget) -> list[Candidate]:
        what = works_around(target.figures, target.region_type)
        return [
            Candidate(
                self.name,
                f"export in a child process (works around {what}): the exporting process stays flat",
                probe={"export_in_child": what},
            )
        ]

    examples = (
        Example(
            "torch's own leak exporting a scripted module",
            FixTarget(
                "export",
                TOOLCHAIN_LEAK,
                region_type="torch.jit._script.RecursiveScriptModule",
                exporter="torchscript",
                figures={
                    "owners": {
                        "repeat": {
                            "objects": {
                                "sites": {
                                    "toolchain": [
                                        {
                                            "where": "Tensor allocated at torch/onnx/_internal/torchscript_exporter/"
                                            "utils.py:972, held by no Python container"
                                        }
                                    ]
                                }
                            }
                        }
                    }
                },
            ),
            True,
            "pytorch/pytorch#82532",
        ),
        Example(
            "torch.fx's growth under torch.export",
            FixTarget(
                "export",
                TOOLCHAIN_LEAK,
                figures={"owners": {"repeat": {"sites": {"toolchain": [{"where": "torch/fx/graph.py:1023"}]}}}},
            ),
            True,
            "torch/fx/graph.py",
        ),
        Example("the model's own export leak is fixed in its code", FixTarget("export", LEAK), False),
        Example("an eager toolchain-leak (oneDNN's cache) exports nothing", FixTarget("eager", TOOLCHAIN_LEAK), False),
    )


FIXER = ExportInChild()
