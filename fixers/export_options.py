"""The export settings the seed article checks first: ``do_constant_folding=True``,
``export_params=True``, and an ``opset_version`` the installed ONNX Runtime supports."""

from __future__ import annotations

from bisector.fixers.base import LEAK, SHAPE_GROWTH, Candidate, Example, FixTarget


class ExportOptions:
    name = "export-options"
    description = "do_constant_folding=True, export_params=True, opset_version aligned with the installed ONNX Runtime"
    stages = ("export", "inference")
    kinds = (LEAK, SHAPE_GROWTH)

    def propose(self, target: FixTarget) -> list[Candidate]:
        out = [
            Candidate(
                self.name,
                "export_params=True: weights stored in the graph, not fed as inputs",
                probe={"export_kwargs": {"export_params": True}},
            )
        ]
        if target.exporter == "torchscript":  # the torch.export path folds in its optimizer
            out.insert(
                0,
                Candidate(
                    self.name,
                    "do_constant_folding=True: fold constant subgraphs while exporting",
                    probe={"export_kwargs": {"do_constant_folding": True}},
                ),
            )
        if target.onnxruntime_opset:
            out.append(
                Candidate(
                    self.name,
                    f"opset_version={target.onnxruntime_opset}: the newest opset the installed ONNX Runtime runs",
                    probe={"export_kwargs": {"opset_version": target.onnxruntime_opset}},
                )
            )
        return out

    examples = (
        Example(
            "TorchScript export",
            FixTarget("export", LEAK, exporter="torchscript", onnxruntime_opset=21),
            True,
            "do_constant_folding",
        ),
        Example("runtime growth", FixTarget("inference", SHAPE_GROWTH, onnxruntime_opset=21), True, "opset_version=21"),
        Example("an eager leak", FixTarget("eager", LEAK), False),
    )


FIXER = ExportOptions()
