"""Which model a call in a user's script serves, read from the code's data flow, and the settings
its tables hold for that model.

A path names the model ``<key>`` when its file name is ``<key>.onnx`` (the manifest's
``artifact``). The path is followed through f-strings, ``+``, ``os.path.join``, ``Path`` division,
``str.format``, ``%`` formatting, local and module assignments, a literal dict from names to paths,
a loop over a registry, and a function's parameter to every place that calls it. The result is a
literal key (the call loads one model's file), an expression that evaluates to the model's key at
the call (the variable that carries the name: a call shared by several models is keyed by it), or
why neither can be proven; never a guess.
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import libcst as cst
from libcst.metadata import Assignment, MetadataWrapper, ParentNodeProvider, PositionProvider, ScopeProvider

from bisector.patching.cst_edits import code_of, dotted

_SEP = "/"
_DEPTH = 12
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
_STEM = "os.path.splitext(os.path.basename({}))[0]"  # a path's file name without `.onnx`


@dataclass(frozen=True)
class Key:
    """What names the model a call serves."""

    literal: str | None = None  # the call loads one model's file: that model's key
    code: str | None = None  # an expression, valid at the call, whose value is the model's key
    aliases: Mapping[str, str] = field(default_factory=dict)  # a model's key -> the key the call sees
    files: Mapping[str, str] = field(default_factory=dict)  # from a literal dict: its key -> file stem
    imports: tuple[str, ...] = ()  # what `code` needs imported
    why: str = ""  # neither: why the key cannot be proven

    @property
    def proven(self) -> bool:
        return self.literal is not None or self.code is not None

    def table_key(self, key: str) -> str:
        """The key under which the call looks up this model's settings."""
        return self.aliases.get(key, key)


@dataclass(frozen=True)
class _Val:
    node: Any  # a value the flow does not see into (a parameter, a loop variable, an attribute)


@dataclass(frozen=True)
class _Look:
    index: Any  # the expression indexing a literal dict of paths (or file names)
    table: Mapping[str, str]


@dataclass(frozen=True)
class _Opaque:
    why: str


def _stem(path: str) -> str:
    name = re.split(r"[/\\]", path)[-1]
    return name[: -len(".onnx")] if name.endswith(".onnx") else name


class Flow:
    """One script's data flow: path expressions resolved to model keys, table lookups evaluated."""

    def __init__(self, source: str | cst.Module) -> None:
        module = cst.parse_module(source) if isinstance(source, str) else source
        self.wrapper = MetadataWrapper(module)
        self.module = self.wrapper.module  # the nodes the metadata is about: visit this one
        self.scopes = self.wrapper.resolve(ScopeProvider)
        self.parents = self.wrapper.resolve(ParentNodeProvider)
        self.positions = self.wrapper.resolve(PositionProvider)
        self._calls: list[cst.Call] | None = None

    # -- the path as parts: text, and values not seen into ----------------------------------------

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
        if depth > _DEPTH:
            return [_Opaque("followed too far")]
        if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
            value = node.evaluated_value
            return [value] if isinstance(value, str) else [_Opaque("bytes, not a path")]
        if isinstance(node, cst.FormattedString):
            out: list[Any] = []
            for p in node.parts:
                if isinstance(p, cst.FormattedStringText):
                    out.append(p.value.replace("{{", "{").replace("}}", "}"))
                elif p.format_spec is not None or p.conversion not in (None, "s"):
                    out.append(_Opaque(f"`{code_of(p.expression)}` is formatted"))
                else:
                    out += self.parts(p.expression, depth + 1)
            return out
        if isinstance(node, cst.BinaryOperation):
            if isinstance(node.operator, cst.Add):
                return self.parts(node.left, depth + 1) + self.parts(node.right, depth + 1)
            if isinstance(node.operator, cst.Divide):
                return self.parts(node.left, depth + 1) + [_SEP] + self.parts(node.right, depth + 1)
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
                if any(isinstance(p, (str, _Look)) for p in inner):
                    return inner
            return [_Val(node)]
        if isinstance(node, cst.Subscript):
            return self._subscript_parts(node)
        return [_Val(node)]

    def _join(self, args: list[Any], depth: int) -> list[Any]:
        out: list[Any] = []
        for i, a in enumerate(args):
            out += ([_SEP] if i else []) + self.parts(a, depth + 1)
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
                return self.parts(node.func.value, depth + 1) + [_SEP] + self._join(plain, depth)
            if attr == "format":
                base = self.text(node.func.value, depth + 1)
                if base is not None:
                    return self._format(base, node, depth)
        return [_Val(node)]

    def _format(self, base: str, call: cst.Call, depth: int) -> list[Any]:
        """`"{}/{}.onnx".format(root, name)`: the template's text and the arguments it takes."""
        positional = [a.value for a in call.args if a.keyword is None and not a.star]
        keywords = {a.keyword.value: a.value for a in call.args if a.keyword is not None}
        out: list[Any] = []
        auto = 0
        try:
            fields = list(string.Formatter().parse(base))
        except ValueError:
            return [_Opaque("an invalid format string")]
        for text, name, spec, conversion in fields:
            out.append(text)
            if name is None:
                continue
            if spec or conversion not in (None, "s"):
                out.append(_Opaque(f"{{{name}}} is formatted"))
                continue
            if name == "":
                name, auto = str(auto), auto + 1
            arg = positional[int(name)] if name.isdigit() and int(name) < len(positional) else keywords.get(name)
            out += self.parts(arg, depth + 1) if arg is not None else [_Opaque(f"{{{name}}} is not an argument")]
        return out

    def _percent(self, node: cst.BinaryOperation, depth: int) -> list[Any]:
        """`"%s/%s.onnx" % (root, name)` and `"%(name)s.onnx" % {"name": name}`."""
        base = self.text(node.left, depth + 1)
        if base is None:
            return [_Val(node)]
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
                out.append(_Opaque(f"%{m.group(2)} formatting"))
            elif m.group(1):
                out += self.parts(named[m.group(1)], depth + 1) if m.group(1) in named else [_Opaque("%(...)s")]
            else:
                out += self.parts(items[i], depth + 1) if i < len(items) else [_Opaque("too few % arguments")]
                i += 1
        out.append(base[at:])
        return out

    def _subscript_parts(self, node: cst.Subscript) -> list[Any]:
        """`PATHS[name]` over a literal dict of paths: a lookup keyed by the index; with a constant
        index, the path itself."""
        table, index = self._table(node)
        if table is None:
            return [_Val(node)]
        if isinstance(index, str):
            return [table[index]] if index in table else [_Opaque(f"{index!r} is not in the table")]
        return [_Look(index, table)]

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

    # -- the key --------------------------------------------------------------------------------

    def key_of(self, path: Any, depth: int = 0) -> Key:
        """The key of the model whose file the path expression names (see the module's doc)."""
        items = self.parts(path)
        name: list[Any] = []  # the file name: the parts after the last separator
        for it in reversed(items):
            if isinstance(it, str) and re.search(r"[/\\]", it):
                name.insert(0, re.split(r"[/\\]", it)[-1])
                break
            name.insert(0, it)
        name = [p for p in name if p != ""]
        shown = code_of(path)
        if name and isinstance(name[-1], str) and name[-1].endswith(".onnx"):
            name[-1] = name[-1][: -len(".onnx")]
            name = [p for p in name if p != ""]
            values = [p for p in name if not isinstance(p, str)]
            if not values:
                return Key(literal="".join(name)) if name else Key(why=f"`{shown}` names no file")
            if len(values) > 1:
                return Key(why=f"the file name in `{shown}` is built from {len(values)} values")
            (v,) = values
            if isinstance(v, _Opaque):
                return Key(why=f"in `{shown}`, {v.why}")
            if isinstance(v, _Look):
                return self._looked_up(v, path, [p if isinstance(p, str) else None for p in name])
            return self._carried(v.node, path, name)
        if len(name) == 1 and isinstance(name[0], _Look):
            return self._looked_up(name[0], path, [None])
        if len(name) == 1 and isinstance(name[0], _Val) and isinstance(name[0].node, cst.Name):
            return self._whole_path(name[0].node, path, depth)
        return Key(why=f"`{shown}` is not built from a model's name and `.onnx`")

    def _pure(self, node: Any) -> bool:
        """Read again at the call, it gives the same value: names, attributes, constant indexes."""
        if isinstance(node, cst.Name):
            return True
        if isinstance(node, cst.Attribute):
            return self._pure(node.value)
        if isinstance(node, cst.Subscript) and len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
            index = node.slice[0].slice.value
            return self._pure(node.value) and isinstance(index, (cst.SimpleString, cst.Integer, cst.Name))
        return False

    def _visible(self, expr: Any, at: Any) -> bool:
        """Every name in expr means the same at `at` as where expr was written."""
        names: list[cst.Name] = []

        class V(cst.CSTVisitor):
            def visit_Name(self, n: cst.Name) -> None:
                names.append(n)

            def visit_Attribute(self, n: cst.Attribute) -> bool:
                n.value.visit(self)
                return False

        expr.visit(V())
        here = self.scopes.get(at)
        for n in names:
            there = self.scopes.get(n)
            if here is None or there is None or set(here[n.value]) != set(there[n.value]):
                return False
        return True

    def _carried(self, value: Any, at: Any, name: list[Any]) -> Key:
        code = code_of(value)
        if not self._pure(value):
            return Key(why=f"`{code}` is computed, not a variable read again at the call")
        if not self._visible(value, at):
            return Key(why=f"`{code}` is not in scope at the call")
        if len(name) == 1:
            return Key(code=code)
        text = "".join(
            p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else "{" + code + "}" for p in name
        )
        return Key(code=f"f{text!r}")

    def _looked_up(self, look: _Look, at: Any, around: list[str | None]) -> Key:
        """`PATHS[name]`: keyed by the index; a model named by its file is found by that file."""
        code = code_of(look.index)
        if not self._pure(look.index) or not self._visible(look.index, at):
            return Key(why=f"`{code}` is not a variable read again at the call")
        files = {k: _stem("".join(p if p is not None else v for p in around)) for k, v in look.table.items()}
        return Key(code=code, aliases={f: k for k, f in files.items() if f != k}, files=files)

    def _whole_path(self, name: cst.Name, at: Any, depth: int) -> Key:
        """The path is one variable: a parameter followed to the calls that pass it, or a loop over
        a registry of paths."""
        a = self._assignment(name)
        if a is None:
            return Key(why=f"`{name.value}` is assigned in more than one place, or nowhere here")
        if isinstance(a.node, cst.Param):
            return self._parameter(a.node, name, depth)
        loop, position = self._loop_of(a.node)
        if loop is None:
            return Key(why=f"`{name.value}` is not traced to a model's name")
        it = loop.iter
        if (
            position == 1
            and isinstance(it, cst.Call)
            and isinstance(it.func, cst.Attribute)
            and it.func.attr.value == "items"
            and isinstance(it.func.value, cst.Name)
        ):
            table = self.literal(it.func.value)
            target = loop.target.elements[0].value if isinstance(loop.target, (cst.Tuple, cst.List)) else None
            if isinstance(table, dict) and all(isinstance(v, str) for v in table.values()) and target is not None:
                return self._looked_up(_Look(target, table), at, [None])
            return Key(why=f"`{code_of(it)}` is not a literal dict of names to paths")
        if position is None and isinstance(it, cst.Name):
            paths = self.literal(it)
            if isinstance(paths, (list, tuple, set)) and paths and all(str(p).endswith(".onnx") for p in paths):
                return Key(code=_STEM.format(name.value), imports=("import os",))
        return Key(why=f"`{name.value}` loops over `{code_of(it)}`, not a literal registry of paths")

    def _loop_of(self, target: Any) -> tuple[Any, int | None]:
        """The for loop (or comprehension) a name is bound by, and its place in a tuple target."""
        node, position = target, None
        parent = self.parents.get(node)
        if isinstance(parent, cst.Element):
            tup = self.parents.get(parent)
            if isinstance(tup, (cst.Tuple, cst.List)):
                position = [e for e in tup.elements].index(parent)
                node, parent = tup, self.parents.get(tup)
        if isinstance(parent, (cst.For, cst.CompFor)) and parent.target is node:
            return parent, position
        return None, None

    def _parameter(self, param: cst.Param, name: cst.Name, depth: int) -> Key:
        """A function's path parameter: proven when every call of the function passes a path that
        names a model (then the call is keyed by the path's file name)."""
        fn = self.parents.get(self.parents.get(param))
        if not isinstance(fn, cst.FunctionDef) or depth > 3:
            return Key(why=f"`{name.value}` is not traced to a model's name")
        callers = self._callers(fn, param)
        if isinstance(callers, str):
            return Key(why=callers)
        if not callers:
            return Key(why=f"{fn.name.value}() is called nowhere in this script, so its `{name.value}` is not traced")
        aliases: dict[str, str] = {}
        for arg in callers:
            k = self.key_of(arg, depth + 1)
            if not k.proven:
                return Key(why=f"{fn.name.value}() is called with `{code_of(arg)}`: {k.why}")
            aliases.update({m: f for m, f in k.files.items() if f != m})
        return Key(code=_STEM.format(name.value), aliases=aliases, imports=("import os",))

    def calls(self) -> list[cst.Call]:
        if self._calls is None:
            found: list[cst.Call] = []

            class V(cst.CSTVisitor):
                def visit_Call(self, n: cst.Call) -> None:
                    found.append(n)

            self.module.visit(V())
            self._calls = found
        return self._calls

    def _callers(self, fn: cst.FunctionDef, param: cst.Param) -> list[Any] | str:
        """The argument each call of fn passes as param; a string saying why not when a call
        cannot be read (a star argument) or fn is passed around as a value."""
        cls = self.parents.get(self.parents.get(fn))
        method = isinstance(cls, cst.ClassDef) and bool(fn.params.params)
        params = list(fn.params.params)
        index = params.index(param) if param in params else None
        out: list[Any] = []
        for call in self.calls():
            skip = 0
            f = call.func
            if isinstance(f, cst.Name):
                a = self._assignment(f)
                if a is None:
                    continue
                if a.node is fn:
                    skip = 0
                elif method and a.node is cls and fn.name.value == "__init__":
                    skip = 1
                else:
                    continue
            elif (
                method
                and isinstance(f, cst.Attribute)
                and f.attr.value == fn.name.value
                and isinstance(f.value, cst.Name)
                and f.value.value in ("self", "cls")
            ):
                skip = 1
            else:
                continue
            if any(a.star for a in call.args):
                return f"{fn.name.value}() is called with * or ** arguments"
            kw = next(
                (a.value for a in call.args if a.keyword is not None and a.keyword.value == param.name.value), None
            )
            positional = [a.value for a in call.args if a.keyword is None]
            if kw is None and index is not None and 0 <= index - skip < len(positional):
                kw = positional[index - skip]
            if kw is None:
                kw = param.default
            if kw is None:
                return f"a call of {fn.name.value}() passes no `{param.name.value}`"
            out.append(kw)
        a = self._assignment(fn.name) if not method else None
        if a is not None:
            for ref in a.references:
                parent = self.parents.get(ref.node)
                if not (isinstance(parent, cst.Call) and parent.func is ref.node):
                    return f"{fn.name.value} is passed around as a value, so not every call of it is seen"
        return out

    # -- settings in tables ---------------------------------------------------------------------

    def evaluate(self, node: Any, env: Mapping[str, Any], depth: int = 0) -> Any:
        """The value of an expression of literals, module or local names, tables indexed by the
        model's key (`env`), `.get`, and list()/tuple()/dict()/sorted(); raises ValueError when
        it is not one the code alone decides."""
        if depth > _DEPTH:
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
        for _ in range(_DEPTH):
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
