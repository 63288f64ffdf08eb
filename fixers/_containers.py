"""Containers in the user's source: who reads what one keeps, and how to keep only its last few
items. Shared by the fixers that bound what forward (append-only) or a hook (collecting-hooks)
keeps adding to."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers._cst import GROW_METHODS
from libcst.metadata import PositionProvider

KEEP_LAST = 4  # items a bounded container keeps: the latest few stay readable


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


# -- containers at their definition: found, bounded at every (re)binding ------------------------------

MEMO_MAX = 8  # entries a bounded memo keeps: small enough that a probe's schedule sees it stop growing
KEEP_NAME = "_BISECTOR_KEEP_LAST"  # the named bound written into the user's code, next to the container
MEMO_NAME = "_BISECTOR_MEMO_MAX"
KEEP_WHY = "items each bounded container keeps; the oldest go first"

CTORS = {
    "list": "list",
    "deque": "deque",
    "collections.deque": "deque",
    "dict": "dict",
    "OrderedDict": "OrderedDict",
    "collections.OrderedDict": "OrderedDict",
    "set": "set",
    "defaultdict": "defaultdict",
    "collections.defaultdict": "defaultdict",
}


def kind_of(value: cst.BaseExpression | None) -> str:
    """What a container literal or constructor makes: `[]` -> "list", `deque()` -> "deque", `{}` ->
    "dict", `OrderedDict()`, `set()`, `defaultdict(list)`; "" for anything else (an already bounded
    `deque(maxlen=8)` included)."""
    if isinstance(value, cst.List) and not value.elements:
        return "list"
    if isinstance(value, cst.Dict) and not value.elements:
        return "dict"
    if isinstance(value, cst.Call):
        kind = CTORS.get(_cst.dotted(value.func), "")
        if kind == "deque" and (len(value.args) > 1 or any(_kw(a) == "maxlen" for a in value.args)):
            return ""  # a maxlen already bounds it
        return kind
    return ""


def _kw(arg: cst.Arg) -> str:
    return arg.keyword.value if arg.keyword is not None else ""


@dataclass(frozen=True)
class Container:
    """A container defined in the user's code: on instances (`self.recent = deque()` in a method
    of cls), on a class (`registry = []` in its body), at module level (`_MEMO = {}`), as a
    mutable default argument (`def f(x, cache={})`, where func names the function), or in a
    closure cell (`store`, a free variable of the nested function func: "make_recorder.record")."""

    path: str
    scope: str  # "self" | "class" | "module" | "default" | "closure"
    name: str  # the attribute, global or parameter
    kind: str  # list, deque, dict, OrderedDict, set
    cls: str = ""  # the class, for "self" and "class"
    func: str = ""  # the function ("Net.forward", "causal_mask"), for "default"
    line: int = 0  # where it is defined (1-based)

    def refers(self, expr: str, stack: list[str], cls_of: Callable[[list[str]], str]) -> bool:
        """Does the dotted expression, written where stack says, name this container?"""
        here = cls_of(stack)
        if self.scope == "self":
            return expr == f"self.{self.name}" and here == self.cls
        if self.scope == "class":
            return expr in (f"{self.cls}.{self.name}",) or (
                here == self.cls and expr in (f"self.{self.name}", f"cls.{self.name}")
            )
        if self.scope == "module":
            return expr == self.name
        return expr == self.name and ".".join(stack) == self.func  # a default argument's, a closure's

    @property
    def label(self) -> str:
        if self.scope == "closure":
            return f"{self.name} in the closure of {self.func}"
        return {"self": f"self.{self.name}", "class": f"{self.cls}.{self.name}", "module": self.name}.get(
            self.scope, f"{self.func}(..., {self.name}=...)"
        )


class _Frames(cst.CSTVisitor):
    """A visitor that knows the enclosing classes and functions: stack holds their names, kinds
    whether each is a "class" or a "def"."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.kinds: list[str] = []

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.stack.append(node.name.value)
        self.kinds.append("class")

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self.stack.pop()
        self.kinds.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.stack.append(node.name.value)
        self.kinds.append("def")

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.stack.pop()
        self.kinds.pop()

    def cls_of(self, stack: list[str]) -> str:
        """The class whose method (or body) this is: the innermost class in the stack."""
        for name, kind in zip(reversed(self.stack), reversed(self.kinds)):
            if kind == "class":
                return name
        return ""

    def line(self, node: cst.CSTNode) -> int:
        return self.get_metadata(PositionProvider, node).start.line


def containers(path: str, source: str) -> list[Container]:
    """Every container defined empty in a file, once each (the first binding is its definition;
    resets are found when it is bounded)."""
    module = _cst.parse(source)
    if module is None:
        return []
    out: dict[tuple[str, str, str, str], Container] = {}

    class V(_Frames):
        def _add(self, target: cst.BaseExpression, value: cst.BaseExpression | None, node: cst.CSTNode) -> None:
            kind = kind_of(value)
            if not kind:
                return
            inner = self.kinds[-1] if self.kinds else ""
            name = _cst.dotted(target)
            if not self.stack and isinstance(target, cst.Name):
                c = Container(path, "module", name, kind, line=self.line(node))
            elif inner == "class" and isinstance(target, cst.Name):
                c = Container(path, "class", name, kind, cls=self.stack[-1], line=self.line(node))
            elif inner == "def" and name.startswith("self.") and name.count(".") == 1 and self.cls_of(self.stack):
                c = Container(path, "self", name[5:], kind, cls=self.cls_of(self.stack), line=self.line(node))
            else:
                return
            out.setdefault((c.scope, c.cls, c.name, c.func), c)

        def visit_Assign(self, node: cst.Assign) -> None:
            if len(node.targets) == 1:
                self._add(node.targets[0].target, node.value, node)

        def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
            self._add(node.target, node.value, node)

        def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
            super().visit_FunctionDef(node)
            func = ".".join(self.stack)
            for p in node.params.params + node.params.kwonly_params + node.params.posonly_params:
                kind = kind_of(p.default)
                if kind:
                    c = Container(path, "default", p.name.value, kind, func=func, line=self.line(p))
                    out.setdefault((c.scope, c.cls, c.name, c.func), c)

    cst.MetadataWrapper(module).visit(V())
    return list(out.values())


@dataclass(frozen=True)
class Use:
    """Where code touches a container: what it does ("grow", "store" for `X[k] = v`, "setdefault",
    "evict" for del/pop/popitem, "grow-item" for `X[k].append(v)` or `X.setdefault(k, []).append(v)`,
    "evict-item" for `del X[k][...]` or `X[k].pop()`, "read"), in which function ("Net.forward"), at
    which line."""

    what: str
    where: str
    line: int


EVICT_METHODS = ("pop", "popitem", "popleft", "remove", "discard")


def uses(source: str, c: Container) -> list[Use]:
    """How the file's code uses c: grows it, stores into it, evicts from it, or reads it."""
    module = _cst.parse(source)
    if module is None:
        return []
    out: list[Use] = []

    class V(_Frames):
        def _mine(self, node: cst.BaseExpression) -> bool:
            return c.refers(_cst.dotted(node), self.stack, self.cls_of)

        def _use(self, what: str, node: cst.CSTNode) -> None:
            out.append(Use(what, ".".join(self.stack), self.line(node)))

        def visit_Call(self, node: cst.Call) -> bool:
            f = node.func
            item = _item_of(f.value) if isinstance(f, cst.Attribute) else None
            if item is not None and self._mine(item[0]) and f.attr.value in (*GROW_METHODS, *EVICT_METHODS, "clear"):
                self._use("grow-item" if f.attr.value in GROW_METHODS else "evict-item", node)
                for a in node.args:
                    a.visit(self)
                return False
            if isinstance(f, cst.Attribute) and self._mine(f.value):
                m = f.attr.value
                self._use(
                    "grow"
                    if m in GROW_METHODS
                    else "evict"
                    if m in EVICT_METHODS
                    else m
                    if m in ("setdefault", "clear")
                    else "read",
                    node,
                )
                for a in node.args:
                    a.visit(self)
                return False
            return True

        def visit_Assign(self, node: cst.Assign) -> bool:
            for t in node.targets:
                if isinstance(t.target, cst.Subscript) and self._mine(t.target.value):
                    self._use("store", node)
                elif self._mine(t.target):
                    self._use("bind", node)
                else:
                    t.visit(self)
            node.value.visit(self)
            return False

        def visit_Del(self, node: cst.Del) -> bool:
            t = node.target
            if isinstance(t, cst.Subscript) and self._mine(t.value):
                self._use("evict", node)
                return False
            item = _item_of(t.value) if isinstance(t, cst.Subscript) else None
            if item is not None and self._mine(item[0]):
                self._use("evict-item", node)
                return False
            return True

        def visit_Attribute(self, node: cst.Attribute) -> bool:
            if self._mine(node):
                self._use("read", node)
                return False
            return True

        def visit_Name(self, node: cst.Name) -> None:
            if c.scope in ("module", "default") and self._mine(node):
                self._use("read", node)

    cst.MetadataWrapper(module).visit(V())
    return out


def _item_of(node: cst.BaseExpression) -> tuple[cst.BaseExpression, cst.BaseExpression] | None:
    """`X[k]` or `X.setdefault(k, ...)` -> (X, k): an item of a dict of lists."""
    if isinstance(node, cst.Subscript) and len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
        return node.value, node.slice[0].slice.value
    if (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Attribute)
        and node.func.attr.value == "setdefault"
        and node.args
    ):
        return node.func.value, node.args[0].value
    return None


def _pure(node: cst.BaseExpression) -> bool:
    """An expression that reads the same twice and does nothing else: a name, an attribute, a
    literal, a subscript or tuple of those (a key written again in the trim that follows)."""
    if isinstance(node, (cst.Name, cst.SimpleString, cst.Integer, cst.Float)):
        return True
    if isinstance(node, cst.Attribute):
        return _pure(node.value)
    if isinstance(node, cst.Tuple):
        return all(_pure(e.value) for e in node.elements)
    if isinstance(node, cst.Subscript):
        return _pure(node.value) and all(isinstance(s.slice, cst.Index) and _pure(s.slice.value) for s in node.slice)
    return False


def reachable(sources: Mapping[str, str], cls_name: str, roots: tuple[str, ...] | None = None) -> set[str]:
    """The functions a region's code runs: its methods named in roots (every method when None), as
    "Cls.method", and what they call by name, transitively: its other methods, the module-level
    functions of the user's files, and the forward of every class of the user's files that it
    constructs (`self.encoder = ImageEncoder()` in __init__: the child runs inside the region)."""
    funcs: dict[str, list[cst.FunctionDef]] = {}
    methods: dict[str, dict[str, cst.FunctionDef]] = {}
    for source in sources.values():
        module = _cst.parse(source)
        if module is None:
            continue
        for node in module.body:
            if isinstance(node, cst.FunctionDef):
                funcs.setdefault(node.name.value, []).append(node)
        for cls in _cst.classes(module):
            own = methods.setdefault(cls.name.value, {})
            own.update((s.name.value, s) for s in cls.body.body if isinstance(s, cst.FunctionDef))
    mine = methods.get(cls_name, {})
    todo: list[tuple[str, cst.FunctionDef]] = [
        (cls_name, m) for name, m in mine.items() if roots is None or name in roots
    ]
    out = {f"{cls_name}.{fn.name.value}" for _, fn in todo}
    while todo:
        owner, fn = todo.pop()
        for name in _called(fn):
            own = methods.get(owner, {})
            if name in own and f"{owner}.{name}" not in out:
                out.add(f"{owner}.{name}")
                todo.append((owner, own[name]))
            elif name in funcs and name not in out:
                out.add(name)
                todo += [("", f) for f in funcs[name]]
            elif name in methods and name != cls_name and "forward" in methods[name]:
                if f"{name}.forward" not in out:
                    out.add(f"{name}.forward")
                    todo.append((name, methods[name]["forward"]))
    return out


def _called(fn: cst.FunctionDef) -> set[str]:
    names: set[str] = set()

    class V(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> None:
            if isinstance(node.func, cst.Name):
                names.add(node.func.value)
            elif isinstance(node.func, cst.Attribute):
                names.add(node.func.attr.value)

    fn.visit(V())
    return names


def retained(figures: Mapping[str, object], containers: tuple[str, ...]) -> list[Mapping[str, object]]:
    """The culprit's retention paths (bisector's walker, when it ran) whose container is one of
    these types: the evidence of what holds the growth. Empty when there is none."""
    paths = figures.get("retention") or ()
    if not isinstance(paths, (list, tuple)):
        return []
    return [p for p in paths if isinstance(p, Mapping) and str(p.get("container", "")) in containers]


def chosen(c: Container, paths: list[Mapping[str, object]]) -> bool:
    """Is c the container a retention path names (by its last name, and its file when given)?"""
    for p in paths:
        if str(p.get("attr", "")) != c.name:
            continue
        at = str(p.get("defined_at", "")).rsplit(":", 1)[0]
        if not at or c.path.endswith(at) or at.endswith(c.path):
            return True
    return False


def pick(
    target_sources: Mapping[str, str],
    cls_name: str,
    figures: Mapping[str, object],
    kinds: tuple[str, ...],
    retention_types: tuple[str, ...],
    grown: Callable[[list[Use], set[str]], bool],
) -> list[tuple[str, Container, list[Use]]]:
    """The containers of these kinds to bound, with their file's source and uses: those a retention
    path names when there is one, else those grown (grown(uses, reachable)) by the region's code."""
    paths = retained(figures, retention_types)
    reach = reachable(target_sources, cls_name) if cls_name else set()
    out = []
    for path, source in target_sources.items():
        for c in containers(path, source):
            if c.kind not in kinds:
                continue
            if paths and not chosen(c, paths):
                continue
            u = uses(source, c)
            if grown(u, reach if not paths else {x.where for x in u}):
                out.append((source, c, u))
    return out


def constant_line(source: str, name: str, value: int, why: str) -> str:
    """`NAME = value  # why`, the bound written into the user's code next to the container; "" when
    the file already defines NAME (a second container of the file shares it)."""
    if re.search(rf"^{re.escape(name)}\s*=", source, re.M):
        return ""
    return f"{name} = {value}  # {why}\n"


def with_bound(source: str, name: str, value: int, why: str, line: int) -> str:
    """source with `NAME = value  # why` just before the top-level statement holding line, unless
    the file defines NAME already (constant_line): the named bound every bounding fixer writes."""
    code = constant_line(source, name, value, why)
    return with_block(source, code, line) if code else source


def with_block(source: str, code: str, before_line: int) -> str:
    """code (top-level statements) inserted just before the top-level statement holding
    before_line, taking over its leading blank lines and comments so the two sit together."""
    module = _cst.parse(source)
    if module is None:
        return source
    wrapper = cst.MetadataWrapper(module)
    pos = wrapper.resolve(PositionProvider)
    body = list(wrapper.module.body)
    at = next((i for i, node in enumerate(body) if pos[node].end.line >= before_line), len(body))
    stmts = list(cst.parse_module(code).body)
    if at < len(body):
        stmts[0] = stmts[0].with_changes(leading_lines=body[at].leading_lines)
        body[at] = body[at].with_changes(leading_lines=[])
    body[at:at] = stmts
    return wrapper.module.with_changes(body=body).code


def rebind(
    source: str, c: Container, value: Callable[[cst.BaseExpression], cst.BaseExpression | None]
) -> tuple[str, int]:
    """Every binding of c (its definition and each reset) with value(old) in place of the old value
    (None leaves it). Returns the source and how many bindings changed, and -1 when some binding
    assigns what value() cannot bound (a reset to a plain list would unbound the container)."""
    module = _cst.parse(source)
    if module is None:
        return source, 0
    changed = 0
    unbounded = False

    class T(_cst.ScopedTransformer):
        def _mine(self, target: cst.BaseExpression) -> bool:
            expr = _cst.dotted(target)
            if c.scope == "class" and self.kinds[-1:] == ["class"] and self.stack[-1] == c.cls:
                return expr == c.name  # the class body's definition
            if c.scope == "module" and isinstance(target, cst.Name):
                return expr == c.name and (not self.stack or c.name in self.globals)
            return c.scope in ("self", "class") and c.refers(expr, self.stack, self.cls_of)

        globals: set[str] = set()

        def visit_Global(self, node: cst.Global) -> None:
            T.globals = T.globals | {n.name.value for n in node.names}

        def _new(self, old: cst.BaseExpression) -> cst.BaseExpression:
            nonlocal changed, unbounded
            new = value(old)
            if new is None:
                unbounded = True
                return old
            changed += 1
            return new

        def leave_Assign(self, o: cst.Assign, u: cst.Assign) -> cst.Assign:
            if len(u.targets) == 1 and self._mine(u.targets[0].target):
                return u.with_changes(value=self._new(u.value))
            return u

        def leave_AnnAssign(self, o: cst.AnnAssign, u: cst.AnnAssign) -> cst.AnnAssign:
            if u.value is not None and self._mine(u.target):
                return u.with_changes(value=self._new(u.value))
            return u

        def leave_Param(self, o: cst.Param, u: cst.Param) -> cst.Param:
            if c.scope == "default" and u.name.value == c.name and ".".join(self.stack) == c.func and u.default:
                return u.with_changes(default=self._new(u.default))
            return u

    T.globals = set()
    new = module.visit(T()).code
    return new, (-1 if unbounded else changed)


def trim_grows(source: str, c: Container, keep: str, reach: set[str] | None = None) -> str | None:
    """`del X[:-keep]` after every statement that grows list c (as the code names it there: `self.x`,
    `Net.x`, `X`), in the functions of reach (every function when None)."""
    module = _cst.parse(source)
    if module is None:
        return None
    done = 0

    class T(_cst.ScopedTransformer):
        def leave_SimpleStatementLine(self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine):
            nonlocal done
            if reach is not None and ".".join(self.stack) not in reach:
                return u
            for stmt in u.body:
                call = _cst.call_of(stmt)
                if call and call[1] in GROW_METHODS and c.refers(call[0], self.stack, self.cls_of):
                    done += 1
                    trim = cst.parse_statement(f"del {call[0]}[:-{keep}]  # keep only the latest {keep}\n")
                    return cst.FlattenSentinel([u, trim])
            return u

    after = module.visit(T()).code
    return after if done else None


def trim_item_grows(source: str, c: Container, keep: str, reach: set[str] | None = None) -> str | None:
    """`del X[k][:-keep]` after every statement that grows a list held in dict c under key k
    (`X[k].append(v)`, `X.setdefault(k, []).append(v)`), in the functions of reach (every function
    when None). None when some such statement's key is not pure (written twice, a call would run
    twice) or nothing grows."""
    module = _cst.parse(source)
    if module is None:
        return None
    done = 0
    impure = False

    class T(_cst.ScopedTransformer):
        def leave_SimpleStatementLine(self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine):
            nonlocal done, impure
            if reach is not None and ".".join(self.stack) not in reach:
                return u
            for stmt in u.body:
                call = stmt.value if isinstance(stmt, cst.Expr) and isinstance(stmt.value, cst.Call) else None
                f = call.func if call is not None else None
                if not isinstance(f, cst.Attribute) or f.attr.value not in GROW_METHODS:
                    continue
                item = _item_of(f.value)
                if item is None or not c.refers(_cst.dotted(item[0]), self.stack, self.cls_of):
                    continue
                if not _pure(item[1]):
                    impure = True
                    return u
                done += 1
                code = cst.Module(body=[])
                owner = f"{code.code_for_node(item[0])}[{code.code_for_node(item[1])}]"
                trim = cst.parse_statement(f"del {owner}[:-{keep}]  # keep only the latest {keep}\n")
                return cst.FlattenSentinel([u, trim])
            return u

    after = module.visit(T()).code
    return after if done and not impure else None


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

    class V(_Frames):
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
