"""Python-level leaks in the model's own code, the most common kind in practice, fixed as edits
to the user's source (libcst, formatting kept):

- a container that forward only ever appends to: stop appending, or keep only the last few
  (``collections.deque(maxlen=4)``);
- a forward hook left registered that collects outputs: unregister it;
- a cache keyed by input shape that never evicts: bound it (oldest entry dropped past 4);
- a tensor accumulated across calls with its autograd history (``self.total += loss``): keep
  the value, drop the history (``.detach()``).

Each edit is verified like every other fix: the edited module is re-measured and its outputs
compared with the original's.
"""

from __future__ import annotations

import re
from typing import Callable

import libcst as cst

from bisector.fixers import _cst
from bisector.fixers.base import LEAK, SHAPE_GROWTH, Candidate, Example, FixTarget, SourceEdit

DEQUE_LEN = 4
CACHE_LEN = 4


def _is_module_class(cls: cst.ClassDef) -> bool:
    return _cst.method(cls, "forward") is not None


def _culprit_class(target: FixTarget) -> str:
    return target.region_type.rsplit(".", 1)[-1] if target.region_type else ""


class PythonLeaks:
    name = "python-leaks"
    description = "edit the model's code: stop append-only containers, unregister collecting hooks, bound shape caches, detach accumulated tensors"
    stages = ("eager", "export")
    kinds = (LEAK, SHAPE_GROWTH)

    def propose(self, target: FixTarget) -> list[Candidate]:
        out: list[Candidate] = []
        culprit = _culprit_class(target)
        for path, source in target.sources.items():
            module = _cst.parse(source)
            if module is None:
                continue
            for cls in _cst.classes(module):
                if not _is_module_class(cls):
                    continue
                mine = cls.name.value == culprit
                if target.kind == LEAK and mine:
                    out += self._append_only(path, source, cls)
                    out += self._accumulated(path, source, cls)
                if target.kind == SHAPE_GROWTH and mine:
                    out += self._shape_cache(path, source, cls)
            if target.kind == LEAK:
                out += self._hooks(path, source, module)
        return out

    # -- append-only containers -------------------------------------------------------------------

    def _append_only(self, path: str, source: str, cls: cst.ClassDef) -> list[Candidate]:
        fn = _cst.method(cls, "forward")
        assert fn is not None
        module = _cst.parse(source)
        assert module is not None
        local = _cst.local_names(fn)
        owners: list[str] = []
        for stmt in _cst.simple_statements(fn):
            call = _cst.call_of(stmt)
            if call and call[1] in _cst.GROW_METHODS:
                owner = call[0]
                root = owner.split(".")[0]
                if root in local and root != "self":
                    continue  # a local list: freed when forward returns
                if _cst.reads_of(fn, owner) == 0 and owner not in owners:
                    owners.append(owner)
        out = []
        name = cls.name.value
        for owner in owners:
            readers = readers_of(module, owner, cls, exclude=(f"{name}.forward",))

            def pred(stmt: cst.BaseSmallStatement, where: str, owner: str = owner, name: str = name) -> bool:
                call = _cst.call_of(stmt)
                return where == f"{name}.forward" and call is not None and call[0] == owner and call[1] in _cst.GROW_METHODS

            # Bounding first: the data stays, only the oldest goes. A trim after each append
            # survives the code's own resets (`self.stats = []` in pop_stats) and keeps the type.
            trimmed = trim_after_grow(source, owner, lambda where, n=name: where == f"{n}.forward")
            if trimmed is not None:
                seen = f"; {', '.join(readers)} still see{'s' if len(readers) == 1 else ''} them" if readers else ""
                out.append(Candidate(
                    self.name, f"{name}.forward: keep only the last {DEQUE_LEN} in {owner} (the oldest dropped after each append{seen})",
                    edits=(SourceEdit(path, source, trimmed, f"trim {owner} to the last {DEQUE_LEN}"),), size=1,
                ))
            if owner.startswith("self."):
                bounded = self._bound_init(source, name, owner[5:])
                if bounded is not None:
                    out.append(Candidate(
                        self.name, f"{name}: keep only the last {DEQUE_LEN} in {owner} (collections.deque(maxlen={DEQUE_LEN}), resets too)",
                        edits=(SourceEdit(path, source, bounded, f"{owner} = collections.deque(maxlen={DEQUE_LEN})"),), size=2,
                    ))
            after, removed = _cst.remove(source, pred)
            if removed:
                out.append(Candidate(
                    self.name, f"{name}.forward: stop adding to {owner}, which keeps every call's result alive",
                    edits=(SourceEdit(path, source, after, f"remove {removed[0]}"),), size=len(removed),
                    removes_behaviour=f"{owner} is read by {', '.join(readers)}, which would see nothing" if readers else "",
                ))
        return out

    def _bound_init(self, source: str, cls_name: str, attr: str) -> str | None:
        """`self.attr = []` (or `: list = []`) in __init__, and every reset of it to `[]` in the
        class's other methods, -> a bounded deque (a reset to a plain list would unbound it)."""
        module = _cst.parse(source)
        if module is None:
            return None
        replaced = False
        other = False

        class T(_cst.ScopedTransformer):
            def _value(self):
                return cst.parse_expression(f"collections.deque(maxlen={DEQUE_LEN})")

            def _mine(self, target: cst.BaseExpression) -> bool:
                return len(self.stack) == 2 and self.stack[0] == cls_name and _cst.dotted(target) == f"self.{attr}"

            def leave_Assign(self, o: cst.Assign, u: cst.Assign):
                nonlocal replaced, other
                if len(u.targets) == 1 and self._mine(u.targets[0].target):
                    if isinstance(u.value, cst.List) and not u.value.elements:
                        replaced = replaced or self.stack[1] == "__init__"
                        return u.with_changes(value=self._value())
                    other = True  # assigned something we cannot bound: no deque candidate
                return u

            def leave_AnnAssign(self, o: cst.AnnAssign, u: cst.AnnAssign):
                nonlocal replaced
                if self._mine(u.target) and isinstance(u.value, cst.List) and not u.value.elements:
                    replaced = replaced or self.stack[1] == "__init__"
                    return cst.Assign(targets=[cst.AssignTarget(u.target)], value=self._value())
                return u

        new = module.visit(T()).code
        if not replaced or other:
            return None
        return _cst.ensure_import(new, "import collections")

    # -- hooks ------------------------------------------------------------------------------------

    def _hooks(self, path: str, source: str, module: cst.Module) -> list[Candidate]:
        collecting = _collecting_functions(module)
        hooks: list[cst.BaseExpression] = []

        def pred(stmt: cst.BaseSmallStatement, where: str) -> bool:
            if not (isinstance(stmt, cst.Expr) and isinstance(stmt.value, cst.Call) and isinstance(stmt.value.func, cst.Attribute)):
                return False
            if stmt.value.func.attr.value not in HOOK_METHODS:
                return False
            if not stmt.value.args:
                return False
            hook = stmt.value.args[0].value
            hit = _grows(hook.body) if isinstance(hook, cst.Lambda) else (
                _cst.dotted(hook) in collecting or _cst.dotted(hook).split(".")[-1] in collecting)
            if hit:
                hooks.append(hook)
            return hit

        after, removed = _cst.remove(source, pred)
        if not removed:
            return []
        out = []
        readers: list[str] = []
        for hook in hooks:
            fn_name = "" if isinstance(hook, cst.Lambda) else _cst.dotted(hook).split(".")[-1]
            body = hook.body if isinstance(hook, cst.Lambda) else _function(module, fn_name)
            for owner in _grown(body) if body is not None else []:
                if "." in owner:
                    continue  # an attribute of the hook's module argument: nothing module-level to bound
                readers += [r for r in readers_of(module, owner, None, exclude=(fn_name,)) if r not in readers]
                bounded = (trim_after_grow(source, owner, lambda where, f=fn_name: where == f) if fn_name
                           else bound_module_list(source, owner))
                if bounded is not None:
                    seen = f"; {', '.join(readers)} still see{'s' if len(readers) == 1 else ''} them" if readers else ""
                    out.append(Candidate(
                        self.name, f"keep only the last {DEQUE_LEN} in {owner}, which the hook {fn_name or 'lambda'} fills{seen}",
                        edits=(SourceEdit(path, source, bounded, f"bound {owner} to the last {DEQUE_LEN}"),), size=1,
                    ))
        out.append(Candidate(
            self.name, f"unregister the forward hook that collects outputs: {removed[0][:80]}",
            edits=(SourceEdit(path, source, after, f"remove {removed[0]}"),), size=len(removed),
            removes_behaviour=f"what the hook collects is read by {', '.join(readers)}, which would see nothing" if readers else "",
        ))
        return out

    # -- shape caches -----------------------------------------------------------------------------

    def _shape_cache(self, path: str, source: str, cls: cst.ClassDef) -> list[Candidate]:
        """`self.cache[key] = value` inside forward, with no eviction: evict the oldest past N."""
        fn = _cst.method(cls, "forward")
        assert fn is not None
        caches: list[str] = []
        for stmt in _cst.simple_statements(fn):
            if isinstance(stmt, cst.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0].target, cst.Subscript):
                owner = _cst.dotted(stmt.targets[0].target.value)
                if owner.startswith("self.") and owner not in caches:
                    caches.append(owner)
        out = []
        name = cls.name.value
        for owner in caches:
            module = _cst.parse(source)
            assert module is not None
            evict = cst.parse_statement(f"if len({owner}) > {CACHE_LEN}:\n    {owner}.pop(next(iter({owner})))  # oldest first\n")

            class T(_cst.ScopedTransformer):
                def __init__(self) -> None:
                    super().__init__()
                    self.done = 0

                def leave_SimpleStatementLine(self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine):
                    if self.stack != [name, "forward"]:
                        return u
                    for s in u.body:
                        if isinstance(s, cst.Assign) and isinstance(s.targets[0].target, cst.Subscript) and _cst.dotted(s.targets[0].target.value) == owner:
                            self.done += 1
                            return cst.FlattenSentinel([u, evict])
                    return u

            t = T()
            after = module.visit(t).code
            if t.done:
                out.append(Candidate(
                    self.name, f"{name}.forward: bound {owner} to {CACHE_LEN} entries (oldest evicted), it kept one per input shape",
                    edits=(SourceEdit(path, source, after, f"evict from {owner} past {CACHE_LEN} entries"),), size=2,
                ))
        return out

    # -- accumulated autograd history ----------------------------------------------------------------

    def _accumulated(self, path: str, source: str, cls: cst.ClassDef) -> list[Candidate]:
        name = cls.name.value
        module = _cst.parse(source)
        assert module is not None

        class T(_cst.ScopedTransformer):
            def __init__(self) -> None:
                super().__init__()
                self.changed: list[str] = []

            def leave_AugAssign(self, o: cst.AugAssign, u: cst.AugAssign):
                owner = _cst.dotted(u.target)
                if self.stack == [name, "forward"] and owner.startswith("self."):
                    op = cst.Module(body=[]).code_for_node(u.operator).strip().rstrip("=").strip()
                    value = cst.parse_expression(f"({owner} {op} ({cst.Module(body=[]).code_for_node(u.value)})).detach()")
                    self.changed.append(owner)
                    return cst.Assign(targets=[cst.AssignTarget(u.target)], value=value)
                return u

        t = T()
        after = module.visit(t).code
        if not t.changed:
            return []
        return [Candidate(
            self.name, f"{name}.forward: keep {', '.join(t.changed)} without its autograd history (.detach())",
            edits=(SourceEdit(path, source, after, f"detach {', '.join(t.changed)}"),), size=len(t.changed),
        )]

    examples = (
        Example(
            "a list on the module that forward appends to",
            FixTarget("eager", LEAK, region_type="m.Recorder", sources={"m.py": (
                "import torch\n\nclass Recorder(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                "        self.history = []\n\n    def forward(self, x):\n        y = x * 2\n        self.history.append(y)  # debugging\n        return y\n"
            )}),
            True, "self.history",
        ),
        Example(
            "a module-level list filled by a wrapper's forward",
            FixTarget("eager", LEAK, region_type="m.Keep", sources={"m.py": (
                "KEPT = []\n\nclass Keep:\n    def forward(self, x):\n        y = self.inner(x)\n        KEPT.append(y)\n        return y\n"
            )}),
            True, "KEPT",
        ),
        Example(
            "a forward hook collecting activations",
            FixTarget("eager", LEAK, region_type="torch.nn.modules.conv.Conv2d", sources={"m.py": (
                "ACTS = []\n\nclass Net:\n    def __init__(self):\n        self.conv = make()\n"
                "        self.conv.register_forward_hook(lambda m, a, out: ACTS.append(out))\n\n    def forward(self, x):\n        return self.conv(x)\n"
            )}),
            True, "register_forward_hook",
        ),
        Example(
            "a cache keyed by shape",
            FixTarget("eager", SHAPE_GROWTH, region_type="m.Table", sources={"m.py": (
                "class Table:\n    def __init__(self):\n        self.cache = {}\n\n    def forward(self, x):\n"
                "        key = tuple(x.shape)\n        if key not in self.cache:\n            self.cache[key] = x.new_zeros(key)\n        return x + self.cache[key]\n"
            )}),
            True, "self.cache",
        ),
        Example(
            "a loss accumulated with its graph",
            FixTarget("eager", LEAK, region_type="m.Acc", sources={"m.py": (
                "class Acc:\n    def forward(self, x):\n        self.total += x.sum()\n        return x\n"
            )}),
            True, "detach",
        ),
        Example(
            "a local list is freed when forward returns",
            FixTarget("eager", LEAK, region_type="m.Local", sources={"m.py": (
                "class Local:\n    def forward(self, x):\n        parts = []\n        parts.append(x)\n        return sum(parts)\n"
            )}),
            False,
        ),
        Example(
            "a list forward also reads is state, not a leak to delete",
            FixTarget("eager", LEAK, region_type="m.Window", sources={"m.py": (
                "class Window:\n    def forward(self, x):\n        self.seen.append(x)\n        return self.seen[-1]\n"
            )}),
            False,
        ),
        Example("native memory, no source to edit", FixTarget("eager", LEAK, region_type="m.C", sources={}), False),
        Example("the runtime's arena is not the model's code", FixTarget("inference", SHAPE_GROWTH, sources={"m.py": "x = 1\n"}), False),
    )


HOOK_METHODS = ("register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook")


def _function(module: cst.Module, name: str) -> cst.FunctionDef | None:
    for node in module.body:
        if isinstance(node, cst.FunctionDef) and node.name.value == name:
            return node
    return None


def _grown(node: cst.CSTNode) -> list[str]:
    """The containers this code grows (`X.append(...)` -> "X")."""
    out: list[str] = []

    class V(cst.CSTVisitor):
        def visit_Call(self, n: cst.Call) -> None:
            if isinstance(n.func, cst.Attribute) and n.func.attr.value in _cst.GROW_METHODS:
                owner = _cst.dotted(n.func.value)
                if owner and owner not in out:
                    out.append(owner)

    node.visit(V())
    return out


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
            if isinstance(node.func, cst.Attribute) and _cst.dotted(node.func.value) == owner and node.func.attr.value in _cst.GROW_METHODS:
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


def trim_after_grow(source: str, owner: str, where: "Callable[[str], bool]") -> str | None:
    """`del owner[:-N]` after every statement growing owner in the functions `where` accepts:
    the container keeps its type and its last N items, whatever resets it elsewhere."""
    module = _cst.parse(source)
    if module is None:
        return None
    trim = cst.parse_statement(f"del {owner}[:-{DEQUE_LEN}]  # keep only the latest {DEQUE_LEN}\n")

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
            target = st.targets[0].target if isinstance(st, cst.Assign) and len(st.targets) == 1 else st.target if isinstance(st, cst.AnnAssign) else None
            if target is not None and _cst.dotted(target) == name and isinstance(st.value, cst.List) and not st.value.elements:
                defs += 1
    if defs != 1 or f"global {name}" in source:
        return None

    class T(cst.CSTTransformer):
        def leave_SimpleStatementLine(self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine):
            st = u.body[0] if len(u.body) == 1 else None
            if isinstance(st, cst.Assign) and _cst.dotted(st.targets[0].target) == name:
                return u.with_changes(body=[st.with_changes(value=cst.parse_expression(f"collections.deque(maxlen={DEQUE_LEN})"))])
            if isinstance(st, cst.AnnAssign) and _cst.dotted(st.target) == name:
                return u.with_changes(body=[cst.Assign([cst.AssignTarget(st.target)], cst.parse_expression(f"collections.deque(maxlen={DEQUE_LEN})"))])
            return u

    new = cst.Module(body=[]).with_changes(body=[n.visit(T()) if isinstance(n, cst.SimpleStatementLine) else n for n in module.body])
    return _cst.ensure_import(module.with_changes(body=new.body).code, "import collections")


def _grows(node: cst.CSTNode) -> bool:
    """Does this expression call X.append/extend/... ?"""
    found = False

    class V(cst.CSTVisitor):
        def visit_Call(self, n: cst.Call) -> None:
            nonlocal found
            if isinstance(n.func, cst.Attribute) and n.func.attr.value in _cst.GROW_METHODS:
                found = True

    node.visit(V())
    return found


def _collecting_functions(module: cst.Module) -> set[str]:
    """Top-level functions and methods whose body grows a container (hook candidates)."""
    names: set[str] = set()

    class V(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
            if _grows(node.body):
                names.add(node.name.value)

    module.visit(V())
    return names


FIXER = PythonLeaks()
