"""Symbolic functions for ATen operators the TorchScript exporter has none for, built from
standard ONNX ops. Each function is self-contained (its imports inside) because a kept fix copies
its source into the user's export script: the user's code must not depend on bisector.

``aten::diff`` is the one users meet first: transformers' masking code calls ``torch.diff`` and
tiny GPT-2 stops the TorchScript exporter there ("Exporting the operator 'aten::diff' to ONNX
opset version 20 is not supported").
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def bisector_diff_symbolic(g, self, n, dim, prepend, append):
    """aten::diff(self, n=1, dim=-1, prepend=None, append=None) as Concat, Slice and Sub (Xor for
    bool): out[i] = x[i+1] - x[i] along dim, n times."""
    import torch
    from torch.onnx import symbolic_helper as sh

    n = sh._maybe_get_const(n, "i")
    dim = sh._maybe_get_const(dim, "i")
    parts = [t for t in (prepend, self, append) if not sh._is_none(t)]
    x = g.op("Concat", *parts, axis_i=dim) if len(parts) > 1 else self

    def const(v):
        return g.op("Constant", value_t=torch.tensor([v], dtype=torch.int64))

    is_bool = (
        self.type().scalarType() == "Bool" if self.type().kind() == "TensorType" and self.type().scalarType() else False
    )
    for _ in range(n):
        later = g.op("Slice", x, const(1), const(2**63 - 1), const(dim))
        earlier = g.op("Slice", x, const(0), const(-1), const(dim))
        x = g.op("Xor", later, earlier) if is_bool else g.op("Sub", later, earlier)
    return x


def bisector_cumsum_symbolic(g, self, dim, dtype=None):
    """aten::cumsum with torch's type rule: bool and small integer inputs sum as int64 (the stock
    symbolic emits CumSum on bool, which ONNX Runtime refuses: "Type 'tensor(bool)' of input
    parameter ... of operator (CumSum) ... is invalid")."""
    import torch
    from torch.onnx import symbolic_helper as sh

    # torch ScalarType code -> ONNX TensorProto type, for the dtypes cumsum takes
    onnx_types = {0: 2, 1: 3, 2: 5, 3: 6, 4: 7, 5: 10, 6: 1, 7: 11, 11: 9, 15: 16}
    dim = sh._maybe_get_const(dim, "i")
    to = None
    if dtype is not None and not sh._is_none(dtype):
        to = onnx_types.get(sh._maybe_get_const(dtype, "i"))
    elif self.type().kind() == "TensorType" and self.type().scalarType() in ("Bool", "Byte", "Char", "Short", "Int"):
        to = 7  # int64, as torch.cumsum promotes
    x = g.op("Cast", self, to_i=to) if to is not None else self
    return g.op("CumSum", x, g.op("Constant", value_t=torch.tensor(dim, dtype=torch.int64)))


@dataclass(frozen=True)
class Symbolic:
    operator: str  # "aten::diff"
    function: Callable[..., Any]
    opset: int  # the lowest opset the function's ONNX ops need
    # How the failure reads when this symbolic is what is missing or wrong (a regex on the message)
    failure: str = ""
    why: str = "the TorchScript exporter has no symbolic for it"

    @property
    def source(self) -> str:
        return inspect.getsource(self.function)


SYMBOLICS: dict[str, Symbolic] = {
    "aten::diff": Symbolic("aten::diff", bisector_diff_symbolic, 13, r"operator 'aten::diff' to ONNX"),
    "aten::cumsum": Symbolic(
        "aten::cumsum",
        bisector_cumsum_symbolic,
        14,
        r"tensor\(bool\)'.*of operator \(CumSum\)",
        "the stock symbolic emits CumSum on bool, which ONNX Runtime refuses",
    ),
}


def operators_in(message: str) -> list[str]:
    """The registry's operators a failure message points at: an export with no symbolic for one,
    or a graph the runtime refuses because of one."""
    import re

    return [op for op, s in SYMBOLICS.items() if s.failure and re.search(s.failure, message)]


def failing_operators(message: str) -> list[str]:
    """Every operator a failure points at: the registry's, then the one an export names as
    unsupported (registry or not)."""
    named = unsupported_operator(message)
    return list(dict.fromkeys(operators_in(message) + ([named] if named else [])))


def unsupported_operator(message: str) -> str | None:
    """The ATen operator an export failure names as unsupported, registry or not."""
    import re

    m = re.search(r"Exporting the operator '([\w:.]+)' to ONNX", message)
    return m.group(1) if m else None


def register(operators: list[str] | tuple[str, ...]) -> None:
    """Register the named symbolics with the TorchScript exporter (for this process)."""
    import torch

    for op in operators:
        s = SYMBOLICS[op]
        torch.onnx.register_custom_op_symbolic(op, s.function, s.opset)


def registration_code(operators: list[str] | tuple[str, ...]) -> str:
    """The functions and their registration, as text for the user's export script."""
    parts = [SYMBOLICS[op].source.rstrip("\n") for op in operators]
    regs = [
        f"torch.onnx.register_custom_op_symbolic({op!r}, {SYMBOLICS[op].function.__name__}, {SYMBOLICS[op].opset})"
        f"  # bisector: {SYMBOLICS[op].why}"
        for op in operators
    ]
    return "\n\n\n".join(parts) + "\n\n\n" + "\n".join(regs) + "\n"
