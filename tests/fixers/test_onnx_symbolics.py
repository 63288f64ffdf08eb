"""The symbolics bisector registers export graphs that compute what torch computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bisector.fixers.onnx_symbolics import SYMBOLICS, operators_in, register, registration_code, unsupported_operator


class Ops(torch.nn.Module):
    def forward(self, x: torch.Tensor, ids: torch.Tensor):
        first = torch.full_like(ids[:, :1], -1)
        return (
            torch.diff(x, dim=1),
            torch.diff(ids, prepend=first, dim=-1),
            torch.diff(x, n=2, dim=0, append=x[:1]),
            torch.diff(ids > 3, dim=-1),
            (ids > 3).cumsum(-1),
            x.cumsum(0, dtype=torch.float64),
        )


def test_registered_symbolics_match_torch_on_several_shapes(tmp_path) -> None:
    import onnxruntime

    path = str(tmp_path / "ops.onnx")
    register(list(SYMBOLICS))
    try:
        axes = {"x": {0: "B", 1: "T"}, "ids": {0: "B", 1: "T"}}
        torch.onnx.export(
            Ops(),
            (torch.randn(4, 6), torch.randint(0, 9, (4, 6))),
            path,
            dynamo=False,
            input_names=["x", "ids"],
            dynamic_axes=axes,
        )
    finally:
        for op in SYMBOLICS:
            torch.onnx.unregister_custom_op_symbolic(op, SYMBOLICS[op].opset)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for shape in [(4, 6), (3, 11), (5, 2)]:
        x, ids = torch.randn(*shape), torch.randint(0, 9, shape)
        got = session.run(None, {"x": x.numpy(), "ids": ids.numpy()})
        for g, r in zip(got, Ops()(x, ids)):
            assert g.dtype == r.numpy().dtype and g.shape == r.shape
            np.testing.assert_allclose(g, r.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("message", "ops"),
    [
        ("Exporting the operator 'aten::diff' to ONNX opset version 20 is not supported", ["aten::diff"]),
        (
            "Type Error: Type 'tensor(bool)' of input parameter (/m/Not_output_0) of operator (CumSum) in node "
            "(/m/CumSum) is invalid.",
            ["aten::cumsum"],
        ),
        ("shape mismatch", []),
    ],
)
def test_failures_point_at_operators(message, ops) -> None:
    assert operators_in(message) == ops


def test_an_unknown_unsupported_operator_is_still_named() -> None:
    assert (
        unsupported_operator("Exporting the operator 'aten::stft' to ONNX opset version 20 is not supported")
        == "aten::stft"
    )


def test_registration_code_stands_alone() -> None:
    code = registration_code(["aten::diff"])
    ns: dict = {"torch": torch}
    exec(compile("import torch\n" + code, "patch", "exec"), ns)  # defines and registers, no bisector import
    torch.onnx.unregister_custom_op_symbolic("aten::diff", SYMBOLICS["aten::diff"].opset)
    assert "bisector" not in code.replace("bisector_diff_symbolic", "").replace("# bisector", "")
