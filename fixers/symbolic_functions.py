"""Side-effect-free symbolic functions for custom autograd.Functions.

The TorchScript-based exporter calls a Function's ``symbolic`` once per export; a symbolic that
keeps what it builds (appends to a module-level list, fills a dict, writes a global) leaves it
behind on every export. The rewrite drops those statements, so symbolic only builds and returns
graph nodes. (The torch.export-based exporter never calls ``symbolic``; see exporter-switch.)
"""

from __future__ import annotations

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers.base import LEAK, Candidate, Example, FixTarget, SourceEdit


def _is_function_class(cls: cst.ClassDef) -> bool:
    return any(b.split(".")[-1] == "Function" for b in _cst.base_names(cls))


class SymbolicFunctions:
    name = "symbolic-functions"
    description = "rewrite custom autograd.Function symbolic functions to keep nothing between exports"
    stages = ("export",)
    kinds = (LEAK,)

    def propose(self, target: FixTarget) -> list[Candidate]:
        if target.exporter != "torchscript":
            return []  # only the TorchScript-based exporter calls symbolic
        out = []
        for path, source in target.sources.items():
            module = _cst.parse(source)
            if module is None:
                continue
            for cls, fn in _cst.find_in_methods(module, _is_function_class, "symbolic"):
                local = _cst.local_names(fn)
                where = f"{cls.name.value}.symbolic"

                def pred(stmt: cst.BaseSmallStatement, at: str, local=local, where=where) -> bool:
                    if at != where:
                        return False
                    if isinstance(stmt, cst.Global):
                        return True
                    call = _cst.call_of(stmt)
                    if call and call[1] in _cst.GROW_METHODS:
                        return call[0].split(".")[0] not in local or call[0].startswith("self.")
                    if isinstance(stmt, cst.Assign):
                        t = stmt.targets[0].target
                        if isinstance(t, cst.Subscript):
                            return _cst.dotted(t.value).split(".")[0] not in local
                    return False

                after, removed = _cst.remove(source, pred)
                if removed:
                    out.append(
                        Candidate(
                            self.name,
                            f"{where}: drop what it keeps between exports ({'; '.join(r[:60] for r in removed)})",
                            edits=(SourceEdit(path, source, after, f"remove {', '.join(removed)}"),),
                            size=len(removed),
                        )
                    )
        return out

    examples = (
        Example(
            "a symbolic that appends to a module-level list",
            FixTarget(
                "export",
                LEAK,
                exporter="torchscript",
                sources={
                    "m.py": (
                        "import torch\n\n_BUILT = []\n\nclass Fn(torch.autograd.Function):\n    @staticmethod\n"
                        "    def forward(ctx, x):\n        return x * 2\n\n"
                        "    @staticmethod\n    def symbolic(g, x):\n        out = g.op('Mul', x, x)\n"
                        "        _BUILT.append(out)\n        return out\n"
                    )
                },
            ),
            True,
            "_BUILT.append",
            edited=(
                (
                    "import torch\n"
                    "\n"
                    "_BUILT = []\n"
                    "\n"
                    "class Fn(torch.autograd.Function):\n"
                    "    @staticmethod\n"
                    "    def forward(ctx, x):\n"
                    "        return x * 2\n"
                    "\n"
                    "    @staticmethod\n"
                    "    def symbolic(g, x):\n"
                    "        out = g.op('Mul', x, x)\n"
                    "        return out\n"
                ),
            ),
        ),
        Example(
            "a symbolic that only builds nodes",
            FixTarget(
                "export",
                LEAK,
                exporter="torchscript",
                sources={
                    "m.py": (
                        "import torch\n\nclass Fn(torch.autograd.Function):\n    @staticmethod\n"
                        "    def symbolic(g, x):\n"
                        "        parts = []\n        parts.append(g.op('Relu', x))\n        return parts[0]\n"
                    )
                },
            ),
            False,
        ),
        Example(
            "the torch.export-based exporter never calls symbolic",
            FixTarget(
                "export",
                LEAK,
                exporter="dynamo",
                sources={
                    "m.py": (
                        "_B = []\nclass Fn(Function):\n    def symbolic(g, x):\n        _B.append(x)\n"
                        "        return x\n"
                    )
                },
            ),
            False,
        ),
    )


FIXER = SymbolicFunctions()
