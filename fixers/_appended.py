"""Lists that forward or a hook appends to (append-only, collecting-hooks): who reads what they
keep, and keeping only their last few items."""

from __future__ import annotations

import re
from collections.abc import Callable

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers._bounds import KEEP_LAST


def still_seen(readers: list[str]) -> str:
    """The tail of a bounding fix's summary: who still reads the kept items (empty when no one)."""
    if not readers:
        return ""
    return f"; {', '.join(readers)} still see{'s' if len(readers) == 1 else ''} them"


def readers_of(module: cst.Module, owner: str, cls: cst.ClassDef | None, exclude: tuple[str, ...] = ()) -> list[str]:
    """Who reads the data kept in owner, other than to grow it or reset it: for `self.x`, the
    class's other methods (`Tagger.pop_stats`); for a module-level name, the module's functions
    and methods that use it, and the module docstring when it names it (data meant for people).
    Reading it is what makes deleting the append (or the hook) remove behaviour."""
    out: list[str] = []
    if owner.startswith("self."):
        if cls is None:
            return out
        for stmt in cls.body.body:
            if isinstance(stmt, cst.FunctionDef) and stmt.name.value != "__init__":
                where = f"{cls.name.value}.{stmt.name.value}"
                if where not in exclude and _uses(stmt, owner):
                    out.append(f"{where}()")
        return out
    doc = module.get_docstring() or ""
    if re.search(rf"(?<![\w.]){re.escape(owner)}(?![\w])", doc):
        out.append("the module docstring")

    class V(cst.CSTVisitor):
        def __init__(self) -> None:
            self.stack: list[str] = []

        def visit_ClassDef(self, node: cst.ClassDef) -> None:
            self.stack.append(node.name.value)

        def leave_ClassDef(self, node: cst.ClassDef) -> None:
            self.stack.pop()

        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            where = ".".join([*self.stack, node.name.value])
            if where not in exclude and node.name.value not in exclude and _uses(node, owner):
                out.append(f"{where}()")
            return False

    module.visit(V())
    return out


def _uses(fn: cst.FunctionDef, owner: str) -> bool:
    """fn uses owner other than to grow it, reset it (`owner = []`) or trim it."""

    class V(cst.CSTVisitor):
        found = False

        def visit_Assign(self, node: cst.Assign) -> bool:
            if len(node.targets) == 1 and _cst.dotted(node.targets[0].target) == owner:
                node.value.visit(self)
                return False
            return True

        def visit_Global(self, node: cst.Global) -> bool:
            return False

        def visit_Del(self, node: cst.Del) -> bool:
            return False

        def visit_Call(self, node: cst.Call) -> bool:
            func = node.func
            if (
                isinstance(func, cst.Attribute)
                and _cst.dotted(func.value) == owner
                and (func.attr.value in _cst.GROW_METHODS)
            ):
                for a in node.args:
                    a.visit(self)
                return False
            return True

        def visit_Attribute(self, node: cst.Attribute) -> bool:
            if _cst.dotted(node) == owner:
                V.found = True
                return False
            return True

        def visit_Name(self, node: cst.Name) -> None:
            if node.value == owner:
                V.found = True

    v = V()
    V.found = False
    fn.body.visit(v)
    return V.found


def trim_after_grow(source: str, owner: str, where: Callable[[str], bool]) -> str | None:
    """`del owner[:-N]` after every statement growing owner in the functions `where` accepts:
    the container keeps its type and its last N items, whatever resets it elsewhere."""
    module = _cst.parse(source)
    if module is None:
        return None
    trim = cst.parse_statement(f"del {owner}[:-{KEEP_LAST}]  # keep only the latest {KEEP_LAST}\n")

    class T(_cst.ScopedTransformer):
        done = 0

        def leave_SimpleStatementLine(self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine):
            if not where(".".join(self.stack)):
                return u
            for stmt in u.body:
                call = _cst.call_of(stmt)
                if call is not None and call[0] == owner and call[1] in _cst.GROW_METHODS:
                    T.done += 1
                    return cst.FlattenSentinel([u, trim])
            return u

    T.done = 0
    new = module.visit(T()).code
    return new if T.done else None


def bound_module_list(source: str, name: str) -> str | None:
    """A module-level `NAME = []` (or `NAME: list = []`) -> a deque of the last N, when nothing
    rebinds it elsewhere (a reset to a plain list would unbound it)."""
    module = _cst.parse(source)
    if module is None:
        return None
    defs = 0
    for node in module.body:
        if isinstance(node, cst.SimpleStatementLine) and len(node.body) == 1:
            st = node.body[0]
            target = (
                st.targets[0].target
                if isinstance(st, cst.Assign) and len(st.targets) == 1
                else st.target
                if isinstance(st, cst.AnnAssign)
                else None
            )
            if (
                target is not None
                and _cst.dotted(target) == name
                and isinstance(st.value, cst.List)
                and not st.value.elements
            ):
                defs += 1
    if defs != 1 or f"global {name}" in source:
        return None

    class T(cst.CSTTransformer):
        def leave_SimpleStatementLine(self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine):
            st = u.body[0] if len(u.body) == 1 else None
            if isinstance(st, cst.Assign) and _cst.dotted(st.targets[0].target) == name:
                return u.with_changes(body=[st.with_changes(value=_deque())])
            if isinstance(st, cst.AnnAssign) and _cst.dotted(st.target) == name:
                return u.with_changes(body=[cst.Assign([cst.AssignTarget(st.target)], _deque())])
            return u

    body = [n.visit(T()) if isinstance(n, cst.SimpleStatementLine) else n for n in module.body]
    new = cst.Module(body=[]).with_changes(body=body)
    return _cst.ensure_import(module.with_changes(body=new.body).code, "import collections")


def _deque() -> cst.BaseExpression:
    return cst.parse_expression(f"collections.deque(maxlen={KEEP_LAST})")
