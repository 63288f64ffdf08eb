"""Export the eager module, not its ``torch.jit.script``-ed form: a workaround for the
TorchScript exporter's own leak on scripted modules (pytorch/pytorch#82532: it clones the
parameters of a scripted module on every export and keeps them). The edit unwraps the
``torch.jit.script(...)`` call that builds the exported module in the user's file; the export
then traces the same eager module, whose outputs are compared like any fix's."""

from __future__ import annotations

import libcst as cst
from bisector.fixers._upstream import works_around
from bisector.fixers.base import LEAK, TOOLCHAIN_LEAK, Candidate, Example, FixTarget, SourceEdit

SCRIPT_CALLS = ("torch.jit.script", "jit.script")


def _dotted(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    return ""


class _Unscript(cst.CSTTransformer):
    def __init__(self) -> None:
        self.count = 0

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        positional = [a for a in updated.args if a.keyword is None]
        if _dotted(updated.func) in SCRIPT_CALLS and len(updated.args) == 1 and len(positional) == 1:
            self.count += 1
            return positional[0].value
        return updated


def unscript(source: str) -> tuple[str, int]:
    """The source with each one-argument torch.jit.script(X) call replaced by X, and how many."""
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError:
        return source, 0
    t = _Unscript()
    return module.visit(t).code, t.count


class EagerNotScripted:
    name = "eager-not-scripted"
    description = "export the eager module rather than its torch.jit.script-ed form (pytorch/pytorch#82532)"
    stages = ("export",)
    kinds = (TOOLCHAIN_LEAK,)

    def propose(self, target: FixTarget) -> list[Candidate]:
        if "ScriptModule" not in target.region_type:
            return []
        what = works_around(target.figures, target.region_type)
        out = []
        for path, source in target.sources.items():
            after, n = unscript(source)
            if n:
                summary = f"export the eager module, not torch.jit.script(...) of it (works around {what})"
                edit = SourceEdit(path, source, after, f"unwrap {n} torch.jit.script call{'s' if n > 1 else ''}")
                out.append(Candidate(self.name, summary, edits=(edit,), size=n))
        return out

    examples = (
        Example(
            "a factory returning a scripted module",
            FixTarget(
                "export",
                TOOLCHAIN_LEAK,
                region_type="torch.jit._script.RecursiveScriptModule",
                sources={"net.py": "import torch\n\n\ndef make():\n    return torch.jit.script(Net().eval())\n"},
            ),
            True,
            edited=("import torch\n\n\ndef make():\n    return Net().eval()\n",),
        ),
        Example(
            "an eager module has nothing to unwrap",
            FixTarget("export", TOOLCHAIN_LEAK, region_type="net.Net", sources={"net.py": "x = 1\n"}),
            False,
        ),
        Example("the model's own leak", FixTarget("export", LEAK, region_type="RecursiveScriptModule"), False),
    )


FIXER = EagerNotScripted()
