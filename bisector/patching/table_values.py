"""The settings a user's script keeps in tables, evaluated for one model (flow.py's last step):
expressions of literals, module or local names, tables indexed by the model's key, ``.get``, and
list()/tuple()/dict()/sorted(); never a guess."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import libcst as cst

from bisector.patching.cst_edits import code_of
from bisector.patching.path_parts import DEPTH, PathParts


class TableValues(PathParts):
    """Table lookups evaluated on top of a script's names and assignments."""

    def evaluate(self, node: Any, env: Mapping[str, Any], depth: int = 0) -> Any:
        """The value of an expression of literals, module or local names, tables indexed by the
        model's key (`env`), `.get`, and list()/tuple()/dict()/sorted(); raises ValueError when
        it is not one the code alone decides."""
        if depth > DEPTH:
            raise ValueError("followed too far")
        node = self._deref(node, env, depth)
        if not isinstance(node, cst.CSTNode):
            return node
        if isinstance(node, (cst.List, cst.Tuple, cst.Set)):
            items = [
                self.evaluate(e.value, env, depth + 1) for e in node.elements if not isinstance(e, cst.StarredElement)
            ]
            if len(items) != len(node.elements):
                raise ValueError("a starred element")
            return {cst.List: list, cst.Tuple: tuple, cst.Set: set}[type(node)](items)
        if isinstance(node, cst.Dict):
            out = {}
            for e in node.elements:
                if not isinstance(e, cst.DictElement):
                    raise ValueError("a ** element")
                out[self.evaluate(e.key, env, depth + 1)] = self.evaluate(e.value, env, depth + 1)
            return out
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Name):
            builtins = {"list": list, "tuple": tuple, "dict": dict, "sorted": sorted, "set": set}
            if node.func.value in builtins and len(node.args) == 1 and not node.args[0].keyword:
                return builtins[node.func.value](self.evaluate(node.args[0].value, env, depth + 1))
        try:
            return ast.literal_eval(code_of(node))
        except (ValueError, SyntaxError, TypeError):
            raise ValueError(f"`{code_of(node)}` is not a literal") from None

    def _deref(self, node: Any, env: Mapping[str, Any], depth: int) -> Any:
        """Follow names and indexes to the node (or value) they stand for."""
        for _ in range(DEPTH):
            if isinstance(node, cst.Name):
                if node.value in env:
                    return env[node.value]
                if node.value in ("True", "False", "None"):
                    return node
                node = self._bound(node)
                if isinstance(node, _Unpack):
                    node = self._item(self._deref(node.value, env, depth + 1), node.index, None, False)
            elif (
                isinstance(node, cst.Subscript) and len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index)
            ):
                key = self.evaluate(node.slice[0].slice.value, env, depth + 1)
                node = self._item(self._deref(node.value, env, depth + 1), key, None, False)
            elif (
                isinstance(node, cst.Call)
                and isinstance(node.func, cst.Attribute)
                and node.func.attr.value == "get"
                and 1 <= len(node.args) <= 2
            ):
                key = self.evaluate(node.args[0].value, env, depth + 1)
                default = node.args[1].value if len(node.args) == 2 else None
                node = self._item(self._deref(node.func.value, env, depth + 1), key, default, True)
            else:
                return node
            if not isinstance(node, cst.CSTNode):
                return node
        raise ValueError("followed too far")

    def _bound(self, name: cst.Name) -> Any:
        """What a name is bound to: its assigned value, or its element of an unpacked one."""
        a = self._assignment(name)
        if a is None or not isinstance(a.node, cst.Name):
            raise ValueError(f"`{name.value}` is not assigned once")
        value = self._assigned_value(name)
        if value is not None:
            return value
        parent = self.parents.get(a.node)
        if isinstance(parent, cst.Element):
            tup = self.parents.get(parent)
            target = self.parents.get(tup)
            stmt = self.parents.get(target)
            if isinstance(target, cst.AssignTarget) and isinstance(stmt, cst.Assign):
                return _Unpack(stmt.value, list(tup.elements).index(parent))
        raise ValueError(f"`{name.value}` is not assigned a value the code alone decides")

    def _item(self, container: Any, key: Any, default: Any, get: bool) -> Any:
        if isinstance(container, cst.Dict):
            for e in container.elements:
                if isinstance(e, cst.DictElement) and self.evaluate(e.key, {}) == key:
                    return e.value
            if get:
                return default if default is not None else cst.Name("None")
            raise ValueError(f"{key!r} is not in the table")
        if isinstance(container, (cst.List, cst.Tuple)) and isinstance(key, int):
            return container.elements[key].value
        if isinstance(container, cst.CSTNode):
            container = self.evaluate(container, {})
        try:
            return (
                container.get(key, None if default is None else self.evaluate(default, {})) if get else container[key]
            )
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ValueError(f"{key!r} is not in the table") from None


@dataclass(frozen=True)
class _Unpack:
    value: Any  # `a, b = value`: the element at index
    index: int
