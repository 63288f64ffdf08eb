"""A tensor accumulated across calls with its autograd history (``self.total += loss`` in
forward): each call's graph stays reachable from the running total. The edit keeps the value and
drops the history (``self.total = (self.total + (loss)).detach()``)."""

from __future__ import annotations

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers.base import LEAK, PYTHON_LEAKS, Candidate, Example, FixTarget, SourceEdit


class AccumulatedHistory:
    name = "accumulated-history"
    family = PYTHON_LEAKS
    description = (
        "a tensor forward accumulates on the module (self.total += loss): keep it without its autograd history"
    )
    stages = ("eager", "export")
    kinds = (LEAK,)

    def propose(self, target: FixTarget) -> list[Candidate]:
        return [c for site in _cst.region_classes(target.sources, target.region_class) for c in self._detach(*site)]

    def _detach(self, path: str, source: str, module: cst.Module, cls: cst.ClassDef) -> list[Candidate]:
        name = cls.name.value

        class T(_cst.ScopedTransformer):
            def __init__(self) -> None:
                super().__init__()
                self.changed: list[str] = []

            def leave_AugAssign(self, o: cst.AugAssign, u: cst.AugAssign) -> cst.AugAssign | cst.Assign:
                owner = _cst.dotted(u.target)
                if self.stack == [name, "forward"] and owner.startswith("self."):
                    code = cst.Module(body=[]).code_for_node
                    op = code(u.operator).strip().rstrip("=").strip()
                    value = cst.parse_expression(f"({owner} {op} ({code(u.value)})).detach()")
                    self.changed.append(owner)
                    return cst.Assign(targets=[cst.AssignTarget(u.target)], value=value)
                return u

        t = T()
        after = module.visit(t).code
        if not t.changed:
            return []
        return [
            Candidate(
                self.name,
                f"{name}.forward: keep {', '.join(t.changed)} without its autograd history (.detach())",
                edits=(SourceEdit(path, source, after, f"detach {', '.join(t.changed)}"),),
                size=len(t.changed),
            )
        ]

    examples = (
        Example(
            "a loss accumulated with its graph",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Acc",
                sources={
                    "m.py": ("class Acc:\n    def forward(self, x):\n        self.total += x.sum()\n        return x\n")
                },
            ),
            True,
            "detach",
            edited=(
                (
                    "class Acc:\n"
                    "    def forward(self, x):\n"
                    "        self.total = (self.total + (x.sum())).detach()\n"
                    "        return x\n"
                ),
            ),
        ),
        Example(
            "a local running sum is freed when forward returns",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Acc",
                sources={
                    "m.py": (
                        "class Acc:\n    def forward(self, x):\n        total = 0\n        total += x.sum()\n"
                        "        return x * total\n"
                    )
                },
            ),
            False,
        ),
        Example(
            "another class's accumulator is not the culprit's",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Net",
                sources={
                    "m.py": ("class Acc:\n    def forward(self, x):\n        self.total += x.sum()\n        return x\n")
                },
            ),
            False,
        ),
    )


FIXER = AccumulatedHistory()
