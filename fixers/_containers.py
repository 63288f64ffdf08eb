"""Containers defined in the user's source: where each is defined, how the code uses it, which
functions a region runs, and which of them to bound (a retention path's, else those grown).
Bounding them is _bounds.py's; closures' lists are _closures.py's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers._cst import GROW_METHODS
from libcst.metadata import PositionProvider

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


class Frames(cst.CSTVisitor):
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

    class V(Frames):
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
    cst.MetadataWrapper(module).visit(_UseFinder(c, out))
    return out


class _UseFinder(Frames):
    """Collects the uses of one container, in order, into out."""

    def __init__(self, c: Container, out: list[Use]) -> None:
        super().__init__()
        self.c = c
        self.out = out

    def _mine(self, node: cst.BaseExpression) -> bool:
        return self.c.refers(_cst.dotted(node), self.stack, self.cls_of)

    def _use(self, what: str, node: cst.CSTNode) -> None:
        self.out.append(Use(what, ".".join(self.stack), self.line(node)))

    def visit_Call(self, node: cst.Call) -> bool:
        f = node.func
        item = item_of(f.value) if isinstance(f, cst.Attribute) else None
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
        item = item_of(t.value) if isinstance(t, cst.Subscript) else None
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
        if self.c.scope in ("module", "default") and self._mine(node):
            self._use("read", node)


def item_of(node: cst.BaseExpression) -> tuple[cst.BaseExpression, cst.BaseExpression] | None:
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


def pure(node: cst.BaseExpression) -> bool:
    """An expression that reads the same twice and does nothing else: a name, an attribute, a
    literal, a subscript or tuple of those (a key written again in the trim that follows)."""
    if isinstance(node, (cst.Name, cst.SimpleString, cst.Integer, cst.Float)):
        return True
    if isinstance(node, cst.Attribute):
        return pure(node.value)
    if isinstance(node, cst.Tuple):
        return all(pure(e.value) for e in node.elements)
    if isinstance(node, cst.Subscript):
        return pure(node.value) and all(isinstance(s.slice, cst.Index) and pure(s.slice.value) for s in node.slice)
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
