"""The source lines of a retention row, read with libcst: where its container is defined and the
statements that grow it (judge/retention.py's ``sites``). Kept apart so that a run which never
reads sites (measure, a clean find) does not import libcst (~0.4 s of every CLI start)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

MUTATORS = frozenset(
    {"append", "extend", "add", "insert", "appendleft", "extendleft", "update", "setdefault", "__setitem__", "put"}
)
LOG_CALLS = frozenset({"debug", "info", "warning", "warn", "error", "critical", "exception", "log"})
GROW_FUNCS = frozenset({"cat", "concat", "concatenate", "stack", "vstack", "hstack", "row_stack", "append"})


@dataclass(frozen=True)
class Site:
    file: str
    line: int
    kind: str  # defined | mutated
    scope: str  # the enclosing "Class.function" chain
    receiver: str = ""  # the last name of a register_*_hook call's receiver


def find_sites(source: str, row: Mapping[str, Any], shown: str) -> list[Site]:
    """The lines of one file that define or grow the container of a retention row."""
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError:
        return []
    visitor = SiteVisitor(row, shown)
    MetadataWrapper(module).visit(visitor)
    return visitor.out


def _last_name(node: Any) -> str:
    """The module a hook is registered on, by its last name: self.layers[0].register_forward_hook
    registers on layers.0."""
    if isinstance(node, cst.Attribute):
        return node.attr.value
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Subscript):
        index = node.slice[0].slice if node.slice else None
        if isinstance(index, cst.Index) and isinstance(index.value, cst.Integer):
            return index.value.value
    return ""


class SiteVisitor(cst.CSTVisitor):
    """Walks one file for the statements that define or grow a retention row's container, by how
    the row reaches it (its root: an attribute, a global, a closure, a default argument, a class
    attribute, an lru_cache, hooks, logging)."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, row: Mapping[str, Any], shown: str) -> None:
        super().__init__()
        self.shown = shown
        self.root = str(row["root"])
        self.attr = str(row.get("attr") or "")
        qualname = str(row.get("qualname") or "")
        self.last = qualname.split(".")[-1] if qualname else ""
        # class-attr: in the class body
        self.by_name = self.root in ("global", "closure", "default-arg", "class-attr")
        self.hook_kind = self.attr.lstrip("_")[:-1] if self.root == "hooks" and self.attr.endswith("s") else ""
        self.out: list[Site] = []
        self.scope: list[str] = []

    def is_recv(self, node: Any) -> bool:
        """The container itself: `self.<attr>`, or the bare name where the root is a name."""
        if isinstance(node, cst.Attribute):
            return node.attr.value == self.attr
        return self.by_name and isinstance(node, cst.Name) and node.value == self.attr

    def mentions(self, node: Any) -> bool:
        if self.is_recv(node):
            return True
        return any(self.mentions(c) for c in node.children)

    def _add(self, node: Any, kind: str, receiver: str = "") -> None:
        line = self.get_metadata(PositionProvider, node).start.line
        self.out.append(Site(self.shown, line, kind, ".".join(self.scope), receiver))

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.scope.append(node.name.value)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self.scope.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        name = node.name.value
        if name == self.last:
            if self.root == "lru-cache":
                for d in node.decorators:
                    if "cache" in cst.Module([]).code_for_node(d.decorator):
                        self._add(d, "defined")
            if self.root == "default-arg":
                for p in (*node.params.params, *node.params.kwonly_params):
                    if p.name.value == self.attr and p.default is not None:
                        self._add(p, "defined")
        self.scope.append(name)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.scope.pop()

    def _target(self, target: Any, value: Any, node: Any) -> None:
        root = self.root
        if self.is_recv(target):
            if value is not None and self.mentions(value):
                self._add(node, "mutated")  # x = torch.cat([x, y]), x = x + [y]
            elif root in ("global",) and self.scope:
                pass  # a local of the same name
            elif root == "class-attr" and not isinstance(target, cst.Attribute) and self.scope != [self.last]:
                pass
            elif root not in ("lru-cache", "default-arg", "hooks", "logging"):
                self._add(node, "defined")
        elif isinstance(target, cst.Subscript) and self.is_recv(target.value):
            self._add(node, "mutated")

    def visit_Assign(self, node: cst.Assign) -> None:
        for t in node.targets:
            self._target(t.target, node.value, node)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._target(node.target, node.value, node)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        t = node.target
        if self.is_recv(t) or (isinstance(t, cst.Subscript) and self.is_recv(t.value)):
            self._add(node, "mutated")

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        name = func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) else ""
        if isinstance(func, cst.Attribute) and name in MUTATORS and self.is_recv(func.value):
            self._add(node, "mutated")
        elif name in ("register_buffer", "register_parameter") and node.args:
            first = node.args[0].value
            if isinstance(first, cst.SimpleString) and first.evaluated_value == self.attr:
                self._add(node, "defined")
        elif self.hook_kind and isinstance(func, cst.Attribute) and name.startswith("register_"):
            if name.endswith(self.hook_kind):
                self._add(node, "mutated", _last_name(func.value))
        elif self.root == "lru-cache" and name == self.last:
            self._add(node, "mutated")
        elif self.root == "logging":
            if isinstance(func, cst.Attribute) and name in LOG_CALLS and len(node.args) > 1:
                self._add(node, "mutated")
            elif self.last and name == self.last:
                self._add(node, "defined")  # the handler's construction
