"""A tensor grown by concatenation onto itself (``self.bank = torch.cat([self.bank, emb.detach()])``,
a MoCo-style queue whose dequeue was forgotten, a module-level buffer): one tensor holds all the
growth, so the count of objects stays flat while its rows pile up. The edit keeps its latest rows
after each concatenation (``self.bank = self.bank[-_BISECTOR_KEEP_ROWS:]``, on the concatenated
dimension): dtype, device and the buffer stay as they were, readers see the most recent rows."""

from __future__ import annotations

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers._bounds import with_bound
from bisector.fixers._containers import reachable, retained
from bisector.fixers.base import LEAK, PYTHON_LEAKS, Candidate, Example, FixTarget, SourceEdit
from libcst.metadata import PositionProvider

KEEP_ROWS = 8  # rows a bounded tensor keeps: few enough that a probe's schedule sees it stop growing
ROWS_NAME = "_BISECTOR_KEEP_ROWS"
CATS = ("torch.cat", "torch.concat", "torch.concatenate", "cat", "torch.vstack", "torch.row_stack")


class TensorBank:
    name = "tensor-bank"
    family = PYTHON_LEAKS
    description = "a tensor concatenated onto itself every call (a memory bank, a queue): keep its latest rows"
    stages = ("eager", "export")
    kinds = (LEAK,)

    def propose(self, target: FixTarget) -> list[Candidate]:
        named = {str(p.get("attr", "")) for p in retained(target.figures, ("Tensor",))}
        reach = reachable(target.sources, target.region_class)
        out = []
        for path, source in target.sources.items():
            for owner, line in _banks(source, reach if not named else None):
                if named and owner.rsplit(".", 1)[-1] not in named:
                    continue
                after = bound(source, owner, line)
                if after is None:
                    continue
                out.append(
                    Candidate(
                        self.name,
                        f"keep only the latest {KEEP_ROWS} rows of {owner} after each concatenation "
                        f"({ROWS_NAME}; raise it for a longer history): it gained rows every call; "
                        "its readers still see the most recent rows, same dtype and device",
                        edits=(SourceEdit(path, source, after, f"{owner} = {owner}[-{ROWS_NAME}:]"),),
                        size=2,
                        bound=KEEP_ROWS,
                    )
                )
        return out

    examples = (
        Example(
            "a memory bank on self grown with torch.cat, read by negatives()",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Head",
                sources={
                    "m.py": (
                        "import torch\n\n\nclass Head(torch.nn.Module):\n    def __init__(self):\n"
                        "        super().__init__()\n        self.register_buffer('bank', torch.zeros(0, 256))\n\n"
                        "    def forward(self, emb):\n        self.bank = torch.cat([self.bank, emb.detach()])\n"
                        "        return emb\n\n    def negatives(self):\n        return self.bank\n"
                    )
                },
            ),
            True,
            "self.bank",
            edited=(
                "import torch\n\n\n"
                "_BISECTOR_KEEP_ROWS = 8  # rows each bounded tensor keeps; the oldest go first\n"
                "class Head(torch.nn.Module):\n    def __init__(self):\n"
                "        super().__init__()\n        self.register_buffer('bank', torch.zeros(0, 256))\n\n"
                "    def forward(self, emb):\n        self.bank = torch.cat([self.bank, emb.detach()])\n"
                "        self.bank = self.bank[-_BISECTOR_KEEP_ROWS:]  # keep the latest rows\n"
                "        return emb\n\n    def negatives(self):\n        return self.bank\n",
            ),
        ),
        Example(
            "a module-level queue grown on dim 1 in a helper, newest first",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Enc",
                sources={
                    "m.py": (
                        "import torch\n\nQUEUE = torch.zeros(128, 0)\n\n\ndef enqueue(k):\n    global QUEUE\n"
                        "    QUEUE = torch.cat((k.T, QUEUE), dim=1)\n\n\nclass Enc:\n    def forward(self, x):\n"
                        "        enqueue(x)\n        return x\n"
                    )
                },
            ),
            True,
            "QUEUE",
            edited=(
                "import torch\n\nQUEUE = torch.zeros(128, 0)\n\n\n"
                "_BISECTOR_KEEP_ROWS = 8  # rows each bounded tensor keeps; the oldest go first\n"
                "def enqueue(k):\n    global QUEUE\n"
                "    QUEUE = torch.cat((k.T, QUEUE), dim=1)\n"
                "    QUEUE = QUEUE[:, :_BISECTOR_KEEP_ROWS]  # keep the latest rows\n\n\n"
                "class Enc:\n    def forward(self, x):\n        enqueue(x)\n        return x\n",
            ),
        ),
        Example(
            "a local tensor concatenated in a loop is freed when forward returns",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Enc",
                sources={
                    "m.py": (
                        "import torch\n\n\nclass Enc:\n    def forward(self, xs):\n        out = xs[0]\n"
                        "        for x in xs[1:]:\n            out = torch.cat([out, x])\n        return out\n"
                    )
                },
            ),
            False,
        ),
        Example(
            "a bank already trimmed after the concatenation",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Head",
                sources={
                    "m.py": (
                        "import torch\n\n\nclass Head:\n    def forward(self, emb):\n"
                        "        self.bank = torch.cat([self.bank, emb])[-1024:]\n        return emb\n"
                    )
                },
            ),
            False,
        ),
    )


def _cat_of(value: cst.BaseExpression, owner: str) -> tuple[str, int] | None:
    """`torch.cat([owner, x], dim=d)` -> ("append", d); `torch.cat([x, owner])` -> ("prepend", d)."""
    if not (isinstance(value, cst.Call) and _cst.dotted(value.func) in CATS and value.args):
        return None
    seq = value.args[0].value
    if not isinstance(seq, (cst.List, cst.Tuple)) or len(seq.elements) < 2:
        return None
    names = [_cst.dotted(e.value) for e in seq.elements]
    if owner not in names:
        return None
    dim = 0
    for i, a in enumerate(value.args[1:], 1):
        kw = a.keyword.value if a.keyword is not None else ""
        if kw in ("dim", "axis") or (not kw and i == 1):
            v = a.value
            neg = isinstance(v, cst.UnaryOperation) and isinstance(v.operator, cst.Minus)
            v = v.expression if neg else v
            if not isinstance(v, cst.Integer):
                return None
            dim = -int(v.value) if neg else int(v.value)
    if _cst.dotted(value.func) in ("torch.vstack", "torch.row_stack"):
        dim = 0
    return ("append" if names[0] == owner else "prepend"), dim


def _banks(source: str, reach: set[str] | None) -> list[tuple[str, int]]:
    """(owner, line) of each `owner = torch.cat([owner, ...])` on an attribute or a global, in the
    functions of reach (every function when None)."""
    module = _cst.parse(source)
    if module is None:
        return []
    out: list[tuple[str, int]] = []

    class V(cst.CSTVisitor):
        METADATA_DEPENDENCIES = (PositionProvider,)

        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []
            self.globals: list[set[str]] = []

        def visit_ClassDef(self, node: cst.ClassDef) -> None:
            self.stack.append(node.name.value)

        def leave_ClassDef(self, node: cst.ClassDef) -> None:
            self.stack.pop()

        def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
            self.stack.append(node.name.value)
            names: set[str] = set()

            class G(cst.CSTVisitor):
                def visit_Global(self, g: cst.Global) -> None:
                    names.update(n.name.value for n in g.names)

            node.body.visit(G())
            self.globals.append(names)

        def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
            self.stack.pop()
            self.globals.pop()

        def visit_Assign(self, node: cst.Assign) -> None:
            if len(node.targets) != 1 or not self.globals:
                return
            owner = _cst.dotted(node.targets[0].target)
            kept = "." in owner or owner in self.globals[-1]  # an attribute or a global outlives the call
            if owner and kept and _cst.dotted(node.value) == "" and _cat_of(node.value, owner):
                if reach is None or ".".join(self.stack) in reach:
                    out.append((owner, self.get_metadata(PositionProvider, node).start.line))

    cst.MetadataWrapper(module).visit(V())
    return out


def bound(source: str, owner: str, line: int) -> str | None:
    """A trim to the latest rows after the concatenation at line, and the named bound before it."""
    module = _cst.parse(source)
    if module is None:
        return None
    wrapper = cst.MetadataWrapper(module)
    pos = wrapper.resolve(PositionProvider)
    done = 0

    class T(cst.CSTTransformer):
        def leave_SimpleStatementLine(self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine):
            nonlocal done
            if pos[o].start.line != line or len(u.body) != 1 or not isinstance(u.body[0], cst.Assign):
                return u
            how = _cat_of(u.body[0].value, owner)
            if how is None:
                return u
            side, dim = how
            keep = f"-{ROWS_NAME}:" if side == "append" else f":{ROWS_NAME}"
            index = ", ".join((["..."] + [":"] * (-dim - 1)) if dim < 0 else [":"] * dim) + (", " if dim else "")
            trim = cst.parse_statement(f"{owner} = {owner}[{index}{keep}]  # keep the latest rows\n")
            done += 1
            return cst.FlattenSentinel([u, trim])

    after = wrapper.module.visit(T()).code
    if not done:
        return None
    return with_bound(after, ROWS_NAME, KEEP_ROWS, "rows each bounded tensor keeps; the oldest go first", line)


FIXER = TensorBank()
