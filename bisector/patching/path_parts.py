"""A path expression in a user's script as its parts (flow.py's first step): text, values the
flow does not see into, and lookups in literal dicts of paths. Followed through f-strings, ``+``,
``os.path.join``, ``Path`` division, ``str.format``, ``%`` formatting, and local and module
assignments."""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import libcst as cst
from libcst.metadata import Assignment, MetadataWrapper, ParentNodeProvider, PositionProvider, ScopeProvider

from bisector.patching.cst_edits import code_of, dotted

SEP = "/"
DEPTH = 12
# Calls whose value is their arguments joined as one path (or the one argument as it is).
_JOINS = {
    "os.path.join",
    "posixpath.join",
    "ntpath.join",
    "str",
    "os.fspath",
    "Path",
    "PurePath",
    "PurePosixPath",
    "pathlib.Path",
    "pathlib.PurePath",
    "pathlib.PurePosixPath",
    "os.path.abspath",
    "os.path.realpath",
    "os.path.normpath",
    "os.path.expanduser",
}
_SAME_PATH = ("resolve", "absolute", "expanduser", "as_posix")  # Path methods that keep the file name


@dataclass(frozen=True)
class Val:
    node: Any  # a value the flow does not see into (a parameter, a loop variable, an attribute)


@dataclass(frozen=True)
class Look:
    index: Any  # the expression indexing a literal dict of paths (or file names)
    table: Mapping[str, str]


@dataclass(frozen=True)
class Opaque:
    why: str


class PathParts:
    """One script's names and their assignments, and a path expression as its parts."""

    def __init__(self, source: str | cst.Module) -> None:
        module = cst.parse_module(source) if isinstance(source, str) else source
        self.wrapper = MetadataWrapper(module)
        self.module = self.wrapper.module  # the nodes the metadata is about: visit this one
        self.scopes = self.wrapper.resolve(ScopeProvider)
        self.parents = self.wrapper.resolve(ParentNodeProvider)
        self.positions = self.wrapper.resolve(PositionProvider)
        self._calls: list[cst.Call] | None = None

    def _assignment(self, name: cst.Name) -> Any | None:
        """The one assignment a name read here refers to (None: builtin, unknown or several)."""
        scope = self.scopes.get(name)
        if scope is None:
            return None
        found = [a for a in scope[name.value] if isinstance(a, Assignment)]
        return found[0] if len(found) == 1 else None

    def _assigned_value(self, name: cst.Name) -> Any | None:
        """The value assigned to the name (`x = ...`, `x: T = ...`, or its place in `a, x = ...`)."""
        a = self._assignment(name)
        if a is None or not isinstance(a.node, cst.Name):
            return None
        parent = self.parents.get(a.node)
        if isinstance(parent, cst.AnnAssign):
            return parent.value
        if isinstance(parent, cst.AssignTarget):
            stmt = self.parents.get(parent)
            return stmt.value if isinstance(stmt, cst.Assign) and len(stmt.targets) == 1 else None
        return None

    def parts(self, node: Any, depth: int = 0) -> list[Any]:
        if depth > DEPTH:
            return [Opaque("followed too far")]
        if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
            value = node.evaluated_value
            return [value] if isinstance(value, str) else [Opaque("bytes, not a path")]
        if isinstance(node, cst.FormattedString):
            out: list[Any] = []
            for p in node.parts:
                if isinstance(p, cst.FormattedStringText):
                    out.append(p.value.replace("{{", "{").replace("}}", "}"))
                elif p.format_spec is not None or p.conversion not in (None, "s"):
                    out.append(Opaque(f"`{code_of(p.expression)}` is formatted"))
                else:
                    out += self.parts(p.expression, depth + 1)
            return out
        if isinstance(node, cst.BinaryOperation):
            if isinstance(node.operator, cst.Add):
                return self.parts(node.left, depth + 1) + self.parts(node.right, depth + 1)
            if isinstance(node.operator, cst.Divide):
                return self.parts(node.left, depth + 1) + [SEP] + self.parts(node.right, depth + 1)
            if isinstance(node.operator, cst.Modulo):
                return self._percent(node, depth)
        if isinstance(node, cst.Call):
            return self._call_parts(node, depth)
        if isinstance(node, cst.Name):
            value = self._assigned_value(node)
            if value is not None:
                inner = self.parts(value, depth + 1)
                # A name assigned a path (or a constant) stands for what it holds; a name assigned a
                # value not seen into stands for itself (it can be read again at the call).
                if any(isinstance(p, (str, Look)) for p in inner):
                    return inner
            return [Val(node)]
        if isinstance(node, cst.Subscript):
            return self._subscript_parts(node)
        return [Val(node)]

    def _join(self, args: list[Any], depth: int) -> list[Any]:
        out: list[Any] = []
        for i, a in enumerate(args):
            out += ([SEP] if i else []) + self.parts(a, depth + 1)
        return out

    def _call_parts(self, node: cst.Call, depth: int) -> list[Any]:
        plain = [a.value for a in node.args if a.keyword is None and not a.star]
        func = dotted(node.func)
        if func in _JOINS and plain and len(plain) == len(node.args):
            return self._join(plain, depth)
        if isinstance(node.func, cst.Attribute):
            attr = node.func.attr.value
            if attr in _SAME_PATH and not node.args:
                return self.parts(node.func.value, depth + 1)
            if attr == "joinpath" and plain and len(plain) == len(node.args):
                return self.parts(node.func.value, depth + 1) + [SEP] + self._join(plain, depth)
            if attr == "format":
                base = self.text(node.func.value, depth + 1)
                if base is not None:
                    return self._format(base, node, depth)
        return [Val(node)]

    def _format(self, base: str, call: cst.Call, depth: int) -> list[Any]:
        """`"{}/{}.onnx".format(root, name)`: the template's text and the arguments it takes."""
        positional = [a.value for a in call.args if a.keyword is None and not a.star]
        keywords = {a.keyword.value: a.value for a in call.args if a.keyword is not None}
        out: list[Any] = []
        auto = 0
        try:
            fields = list(string.Formatter().parse(base))
        except ValueError:
            return [Opaque("an invalid format string")]
        for text, name, spec, conversion in fields:
            out.append(text)
            if name is None:
                continue
            if spec or conversion not in (None, "s"):
                out.append(Opaque(f"{{{name}}} is formatted"))
                continue
            if name == "":
                name, auto = str(auto), auto + 1
            arg = positional[int(name)] if name.isdigit() and int(name) < len(positional) else keywords.get(name)
            out += self.parts(arg, depth + 1) if arg is not None else [Opaque(f"{{{name}}} is not an argument")]
        return out

    def _percent(self, node: cst.BinaryOperation, depth: int) -> list[Any]:
        """`"%s/%s.onnx" % (root, name)` and `"%(name)s.onnx" % {"name": name}`."""
        base = self.text(node.left, depth + 1)
        if base is None:
            return [Val(node)]
        right = node.right
        items = [e.value for e in right.elements] if isinstance(right, cst.Tuple) else [right]
        named = (
            {ast.literal_eval(code_of(e.key)): e.value for e in right.elements if isinstance(e, cst.DictElement)}
            if isinstance(right, cst.Dict)
            else {}
        )
        out: list[Any] = []
        at, i = 0, 0
        for m in re.finditer(r"%(?:\((\w+)\))?([a-z%])", base):
            out.append(base[at : m.start()])
            at = m.end()
            if m.group(2) == "%":
                out.append("%")
            elif m.group(2) != "s":
                out.append(Opaque(f"%{m.group(2)} formatting"))
            elif m.group(1):
                out += self.parts(named[m.group(1)], depth + 1) if m.group(1) in named else [Opaque("%(...)s")]
            else:
                out += self.parts(items[i], depth + 1) if i < len(items) else [Opaque("too few % arguments")]
                i += 1
        out.append(base[at:])
        return out

    def _subscript_parts(self, node: cst.Subscript) -> list[Any]:
        """`PATHS[name]` over a literal dict of paths: a lookup keyed by the index; with a constant
        index, the path itself."""
        table, index = self._table(node)
        if table is None:
            return [Val(node)]
        if isinstance(index, str):
            return [table[index]] if index in table else [Opaque(f"{index!r} is not in the table")]
        return [Look(index, table)]

    def _table(self, node: cst.Subscript) -> tuple[dict[str, str] | None, Any]:
        """A literal dict of strings under the subscript (`D[k]`, `D[k]["path"]`) as {key: str},
        and the index that picks the entry (a str when constant, else its node)."""
        chain: list[Any] = []
        base: Any = node
        while isinstance(base, cst.Subscript) and len(base.slice) == 1 and isinstance(base.slice[0].slice, cst.Index):
            chain.insert(0, base.slice[0].slice.value)
            base = base.value
        if not isinstance(base, cst.Name) or not chain:
            return None, None
        data = self.literal(base)
        if not isinstance(data, dict):
            return None, None
        rest = []
        for c in chain[1:]:
            try:
                rest.append(ast.literal_eval(code_of(c)))
            except (ValueError, SyntaxError):
                return None, None
        out = {}
        for k, v in data.items():
            for r in rest:
                v = v.get(r) if isinstance(v, dict) else None
            if isinstance(k, str) and isinstance(v, str):
                out[k] = v
        try:
            index = ast.literal_eval(code_of(chain[0]))
        except (ValueError, SyntaxError):
            index = chain[0]
        return (out or None), index

    def literal(self, name: cst.Name) -> Any:
        """The literal a name is assigned (None when it is not one)."""
        value = self._assigned_value(name)
        if value is None:
            return None
        try:
            return ast.literal_eval(code_of(value))
        except (ValueError, SyntaxError, TypeError):
            return None

    def text(self, node: Any, depth: int = 0) -> str | None:
        parts = self.parts(node, depth)
        return "".join(parts) if all(isinstance(p, str) for p in parts) else None
