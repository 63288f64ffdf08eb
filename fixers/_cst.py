"""libcst helpers shared by the fixers that edit the user's source. Formatting and comments are
kept: libcst round-trips every byte it does not change."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import libcst as cst
import libcst.matchers as m


def parse(source: str) -> cst.Module | None:
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError:
        return None


def dotted(node: cst.BaseExpression) -> str:
    """`self.history` -> "self.history"; anything else -> ""."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        left = dotted(node.value)
        return f"{left}.{node.attr.value}" if left else ""
    return ""


def call_of(stmt: cst.BaseSmallStatement) -> tuple[str, str] | None:
    """`X.append(...)` as a statement -> ("X", "append")."""
    if isinstance(stmt, cst.Expr) and isinstance(stmt.value, cst.Call) and isinstance(stmt.value.func, cst.Attribute):
        owner = dotted(stmt.value.func.value)
        if owner:
            return owner, stmt.value.func.attr.value
    return None


GROW_METHODS = ("append", "extend", "add", "update", "insert", "appendleft")


def classes(module: cst.Module) -> list[cst.ClassDef]:
    out: list[cst.ClassDef] = []

    class V(cst.CSTVisitor):
        def visit_ClassDef(self, node: cst.ClassDef) -> None:
            out.append(node)

    module.visit(V())
    return out


def region_classes(sources: Mapping[str, str], class_name: str) -> Iterator[tuple[str, str, cst.Module, cst.ClassDef]]:
    """(path, source, module, class) for every class of the user's sources named class_name that
    has a forward: where the fixers that edit a region's own code look."""
    for path, source in sources.items():
        module = parse(source)
        if module is None:
            continue
        for cls in classes(module):
            if cls.name.value == class_name and method(cls, "forward") is not None:
                yield path, source, module, cls


def method(cls: cst.ClassDef, name: str) -> cst.FunctionDef | None:
    for stmt in cls.body.body:
        if isinstance(stmt, cst.FunctionDef) and stmt.name.value == name:
            return stmt
    return None


def base_names(cls: cst.ClassDef) -> list[str]:
    return [dotted(b.value) for b in cls.bases]


def local_names(fn: cst.FunctionDef) -> set[str]:
    """Parameters and names assigned inside the function."""
    names = {p.name.value for p in fn.params.params + fn.params.posonly_params + fn.params.kwonly_params}
    if isinstance(fn.params.star_arg, cst.Param):
        names.add(fn.params.star_arg.name.value)

    class V(cst.CSTVisitor):
        def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
            if isinstance(node.target, cst.Name):
                names.add(node.target.value)

        def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
            if isinstance(node.target, cst.Name):
                names.add(node.target.value)

        def visit_For(self, node: cst.For) -> None:
            if isinstance(node.target, cst.Name):
                names.add(node.target.value)

    fn.visit(V())
    return names


class ScopedTransformer(cst.CSTTransformer):
    """A transformer that knows where it is: `stack` holds the enclosing class and function names
    (["Recorder", "forward"] inside Recorder.forward), `kinds` whether each is a "class" or a
    "def". Subclasses that override __init__ call super().__init__()."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.kinds: list[str] = []

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.stack.append(node.name.value)
        self.kinds.append("class")

    def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef) -> cst.ClassDef:
        self.stack.pop()
        self.kinds.pop()
        return updated

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.stack.append(node.name.value)
        self.kinds.append("def")

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        self.stack.pop()
        self.kinds.pop()
        return updated

    def cls_of(self, stack: list[str]) -> str:
        """The class whose method (or body) this is: the innermost class in the stack."""
        for name, kind in zip(reversed(self.stack), reversed(self.kinds)):
            if kind == "class":
                return name
        return ""


class RemoveStatements(ScopedTransformer):
    """Remove simple statements matched by `pred(stmt, enclosing function or None)`; a block left
    empty gets `pass`."""

    def __init__(self, pred: Callable[[cst.BaseSmallStatement, str], bool]) -> None:
        super().__init__()
        self.pred = pred
        self.removed: list[str] = []

    def leave_SimpleStatementLine(self, original: cst.SimpleStatementLine, updated: cst.SimpleStatementLine):
        where = ".".join(self.stack)
        keep = [s for s in updated.body if not self.pred(s, where)]
        if len(keep) == len(updated.body):
            return updated
        self.removed.append(cst.Module(body=[original.with_changes(leading_lines=[])]).code.strip())
        if not keep:
            return cst.RemoveFromParent()
        return updated.with_changes(body=keep)

    def _fill(self, updated):
        if isinstance(updated.body, cst.IndentedBlock) and not updated.body.body:
            return updated.with_changes(body=updated.body.with_changes(body=[cst.SimpleStatementLine([cst.Pass()])]))
        return updated

    def leave_If(self, original: cst.If, updated: cst.If):
        return self._fill(updated)

    def leave_For(self, original: cst.For, updated: cst.For):
        return self._fill(updated)

    def leave_With(self, original: cst.With, updated: cst.With):
        return self._fill(updated)

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        return self._fill(super().leave_FunctionDef(original, updated))


def remove(source: str, pred: Callable[[cst.BaseSmallStatement, str], bool]) -> tuple[str, list[str]]:
    """The source without the matched statements, and the removed lines."""
    module = parse(source)
    if module is None:
        return source, []
    t = RemoveStatements(pred)
    return module.visit(t).code, t.removed


def ensure_import(source: str, line: str) -> str:
    """Add `import x` after the module docstring and __future__ imports, unless already there."""
    if line in source.splitlines():
        return source
    module = parse(source)
    if module is None:
        return source
    stmt = cst.parse_statement(line + "\n")
    body = list(module.body)
    at = 0
    for i, node in enumerate(body):
        if m.matches(node, m.SimpleStatementLine(body=[m.Expr(value=m.SimpleString())])) and i == 0:
            at = 1
        elif m.matches(node, m.SimpleStatementLine(body=[m.ImportFrom(module=m.Name("__future__"))])):
            at = i + 1
    body.insert(at, stmt)
    return module.with_changes(body=body).code


def find_in_methods(
    module: cst.Module, class_filter: Callable[[cst.ClassDef], bool], method_name: str
) -> Iterable[tuple[cst.ClassDef, cst.FunctionDef]]:
    for cls in classes(module):
        if class_filter(cls):
            fn = method(cls, method_name)
            if fn is not None:
                yield cls, fn


def simple_statements(fn: cst.FunctionDef) -> list[cst.BaseSmallStatement]:
    out: list[cst.BaseSmallStatement] = []

    class V(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return node is fn  # not into nested functions

        def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
            out.extend(node.body)

    fn.visit(V())
    return out


def reads_of(fn: cst.CSTNode, owner: str, ignore: Sequence[str] = GROW_METHODS) -> int:
    """How often `owner` is used in fn (a function, or any node) other than as `owner.<grow method>(...)`."""
    count = 0

    class V(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> bool:
            nonlocal count
            if (
                isinstance(node.func, cst.Attribute)
                and dotted(node.func.value) == owner
                and node.func.attr.value in ignore
            ):
                for a in node.args:
                    a.visit(self)
                return False
            return True

        def visit_Attribute(self, node: cst.Attribute) -> bool:
            nonlocal count
            if dotted(node) == owner:
                count += 1
                return False
            return True

        def visit_Name(self, node: cst.Name) -> None:
            nonlocal count
            if node.value == owner:
                count += 1

    (fn.body if isinstance(fn, cst.FunctionDef) else fn).visit(V())
    return count
