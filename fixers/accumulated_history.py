"""A tensor accumulated across calls with its autograd history: a running value on the module that
forward computes from itself (``self.total += loss``, ``self.total = self.total + loss``,
``self.ema = 0.9 * self.ema + 0.1 * x.mean()``). Each call's graph stays reachable from it. The
edit keeps the value and drops the history (``self.total = (self.total + (loss)).detach()``).

One candidate per accumulator: a counter (``self.calls += 1``, a literal added) is no tensor and
is left alone, and an attribute that is not a tensor makes only its own candidate fail to run.
The engine pairs candidates when two accumulators leak together."""

from __future__ import annotations

import re

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers.base import LEAK, PYTHON_LEAKS, Candidate, Example, FixTarget, SourceEdit


def _detached_already(value: cst.BaseExpression) -> bool:
    return (
        isinstance(value, cst.Call)
        and isinstance(value.func, cst.Attribute)
        and value.func.attr.value in ("detach", "item", "tolist")
    )


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
        owners = _accumulators(module, name)
        out = []
        for owner in owners:
            after = module.visit(_Detach(name, owner)).code
            if after != source:
                out.append(
                    Candidate(
                        self.name,
                        f"{name}.forward: keep {owner} without its autograd history (.detach())",
                        edits=(SourceEdit(path, source, after, f"detach {owner}"),),
                        size=1,
                    )
                )
        return out

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
            "a running total rebuilt from itself, without +=",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Reg",
                sources={
                    "m.py": (
                        "class Reg:\n    def forward(self, x):\n"
                        "        self.penalty = self.penalty + x.pow(2).mean()\n        return x\n"
                    )
                },
            ),
            True,
            "detach",
            edited=(
                "class Reg:\n    def forward(self, x):\n"
                "        self.penalty = (self.penalty + x.pow(2).mean()).detach()\n        return x\n",
            ),
        ),
        Example(
            "a moving average and a call counter: the average alone",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Ema",
                sources={
                    "m.py": (
                        "class Ema:\n    def forward(self, x):\n        self.calls += 1\n"
                        "        self.steps = self.steps + 1\n"
                        "        self.ema = 0.9 * self.ema + 0.1 * x.mean()\n        return x - self.ema\n"
                    )
                },
            ),
            True,
            "self.ema",
            edited=(
                "class Ema:\n    def forward(self, x):\n        self.calls += 1\n"
                "        self.steps = self.steps + 1\n"
                "        self.ema = (0.9 * self.ema + 0.1 * x.mean()).detach()\n        return x - self.ema\n",
            ),
        ),
        Example(
            "a value replaced each call, or kept detached already, holds no history",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Keep",
                sources={
                    "m.py": (
                        "class Keep:\n    def forward(self, x):\n        self.last = x.sum() * 2\n"
                        "        self.total = (self.total + x.sum()).detach()\n        return x\n"
                    )
                },
            ),
            False,
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


def _running_update(node: cst.CSTNode) -> tuple[str, cst.BaseExpression] | None:
    """(owner, the new value) for ``self.x op= v`` (v not a literal: a counter) or
    ``self.x = <an expression that reads self.x>`` not already detached; None otherwise."""
    code = cst.Module(body=[]).code_for_node
    if isinstance(node, cst.AugAssign):
        owner = _cst.dotted(node.target)
        if not owner.startswith("self.") or isinstance(node.value, (cst.Integer, cst.Float)):
            return None
        op = code(node.operator).strip().rstrip("=").strip()
        return owner, cst.parse_expression(f"({owner} {op} ({code(node.value)})).detach()")
    if isinstance(node, cst.Assign) and len(node.targets) == 1:
        owner = _cst.dotted(node.targets[0].target)
        value = node.value
        if (
            owner.startswith("self.")
            and isinstance(value, (cst.BinaryOperation, cst.UnaryOperation))
            and _cst.reads_of(value, owner) > 0
            and not _detached_already(value)
            and re.search(r"[A-Za-z_]", code(value).replace(owner, "")) is not None  # not a counter
        ):
            return owner, cst.parse_expression(f"({code(value)}).detach()")
    return None


def _accumulators(module: cst.Module, cls: str) -> list[str]:
    """The running values the class's forward updates from themselves, in source order."""
    found: list[str] = []

    class Find(_cst.ScopedTransformer):
        def _note(self, node: cst.CSTNode) -> None:
            got = _running_update(node) if self.stack == [cls, "forward"] else None
            if got and got[0] not in found:
                found.append(got[0])

        def leave_AugAssign(self, o: cst.AugAssign, u: cst.AugAssign) -> cst.AugAssign:
            self._note(u)
            return u

        def leave_Assign(self, o: cst.Assign, u: cst.Assign) -> cst.Assign:
            self._note(u)
            return u

    module.visit(Find())
    return found


class _Detach(_cst.ScopedTransformer):
    """Every running update of one accumulator in the class's forward, detached."""

    def __init__(self, cls: str, owner: str) -> None:
        super().__init__()
        self.cls, self.owner = cls, owner

    def _edit(self, node: cst.AugAssign | cst.Assign) -> cst.AugAssign | cst.Assign:
        got = _running_update(node) if self.stack == [self.cls, "forward"] else None
        if got is None or got[0] != self.owner:
            return node
        target = node.target if isinstance(node, cst.AugAssign) else node.targets[0].target
        return cst.Assign(targets=[cst.AssignTarget(target)], value=got[1])

    def leave_AugAssign(self, o: cst.AugAssign, u: cst.AugAssign) -> cst.AugAssign | cst.Assign:
        return self._edit(u)

    def leave_Assign(self, o: cst.Assign, u: cst.Assign) -> cst.AugAssign | cst.Assign:
        return self._edit(u)


FIXER = AccumulatedHistory()
