"""Lists kept in closure cells: a nested function that grows a variable of the function around
it, and whether the source shows the list outliving the call."""

from __future__ import annotations

from collections.abc import Mapping

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers._containers import Container, Frames, kind_of
from bisector.fixers._cst import GROW_METHODS

HOOK_REGISTRARS = ("register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook", "register_hook")


def closures(path: str, source: str) -> list[tuple[Container, bool]]:
    """Lists kept in closure cells: a nested function that grows a free variable, a parameter or a
    local of the function around it (`def make_recorder(store): def record(m, a, out):
    store.append(out)`). Each as a Container (scope "closure", func the nested function's chain
    "make_recorder.record", line the outermost function's), with whether the source shows that it
    outlives the call and holds a list: the nested function is returned or registered as a hook,
    and the variable is bound to `[]` there, defaults to `[]`, or every call of the outer function
    in the file passes `[]` for it."""
    module = _cst.parse(source)
    if module is None:
        return []
    out: list[tuple[Container, bool]] = []
    calls: dict[str, list[cst.Call]] = {}

    class Calls(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> None:
            if isinstance(node.func, cst.Name):
                calls.setdefault(node.func.value, []).append(node)

    module.visit(Calls())

    class V(Frames):
        def __init__(self) -> None:
            super().__init__()
            self.defs: list[cst.FunctionDef] = []

        def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
            outer = self.defs[-1] if self.defs and self.kinds[-1:] == ["def"] else None
            super().visit_FunctionDef(node)
            top = self.defs[0] if self.defs else node
            self.defs.append(node)
            if outer is None:
                return
            inner_locals = _cst.local_names(node)
            for var in dict.fromkeys(_grown_names(node)):
                if var in inner_locals or var not in _cst.local_names(outer):
                    continue
                c = Container(path, "closure", var, "list", func=".".join(self.stack), line=self.line(top))
                out.append((c, _escapes(outer, node.name.value) and _listed(outer, var, calls)))

        def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
            super().leave_FunctionDef(node)
            self.defs.pop()

    cst.MetadataWrapper(module).visit(V())
    return out


def _grown_names(fn: cst.FunctionDef) -> list[str]:
    """Bare names fn grows as statements (`store.append(x)` -> "store")."""
    out: list[str] = []
    for stmt in _cst.simple_statements(fn):
        call = _cst.call_of(stmt)
        if call is not None and call[1] in GROW_METHODS and "." not in call[0]:
            out.append(call[0])
    return out


def _escapes(outer: cst.FunctionDef, inner: str) -> bool:
    """Does outer return the nested function or register it as a hook (so it outlives the call)?"""
    found = False

    class V(cst.CSTVisitor):
        def visit_Return(self, node: cst.Return) -> None:
            nonlocal found
            found = found or (isinstance(node.value, cst.Name) and node.value.value == inner)

        def visit_Call(self, node: cst.Call) -> None:
            nonlocal found
            f = node.func
            if isinstance(f, cst.Attribute) and f.attr.value in HOOK_REGISTRARS:
                found = found or any(isinstance(a.value, cst.Name) and a.value.value == inner for a in node.args)

    outer.body.visit(V())
    return found


def _listed(outer: cst.FunctionDef, var: str, calls: Mapping[str, list[cst.Call]]) -> bool:
    """Is var a list: bound to `[]` in outer, a parameter defaulting to `[]`, or a parameter every
    call of outer in the file passes `[]` (or `list()`) for?"""

    def empty_list(v: cst.BaseExpression | None) -> bool:
        return kind_of(v) == "list"

    class V(cst.CSTVisitor):
        bound = False

        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return node is outer

        def visit_Assign(self, node: cst.Assign) -> None:
            if any(_cst.dotted(t.target) == var for t in node.targets) and empty_list(node.value):
                V.bound = True

    V.bound = False
    outer.visit(V())
    if V.bound:
        return True
    params = outer.params.posonly_params + outer.params.params
    names = [p.name.value for p in params]
    if var not in names:
        return False
    at = names.index(var)
    if empty_list(params[at].default):
        return True
    sites = calls.get(outer.name.value, [])
    if not sites:
        return False
    for call in sites:
        pos = [a for a in call.args if a.keyword is None and not a.star]
        kw = {a.keyword.value: a.value for a in call.args if a.keyword is not None}
        value = pos[at].value if at < len(pos) else kw.get(var)
        if not empty_list(value):
            return False
    return True
