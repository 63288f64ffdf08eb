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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import libcst as cst

from bisector.patching.cst_edits import code_of
from bisector.patching.path_parts import Look, Opaque, Val
from bisector.patching.table_values import TableValues

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


def _stem(path: str) -> str:
    name = re.split(r"[/\\]", path)[-1]
    return name[: -len(".onnx")] if name.endswith(".onnx") else name


class Flow(TableValues):
    """One script's data flow: path expressions resolved to model keys (the parts: path_parts.py),
    table lookups evaluated (table_values.py)."""

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
            if isinstance(v, Opaque):
                return Key(why=f"in `{shown}`, {v.why}")
            if isinstance(v, Look):
                return self._looked_up(v, path, [p if isinstance(p, str) else None for p in name])
            return self._carried(v.node, path, name)
        if len(name) == 1 and isinstance(name[0], Look):
            return self._looked_up(name[0], path, [None])
        if len(name) == 1 and isinstance(name[0], Val) and isinstance(name[0].node, cst.Name):
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

    def _looked_up(self, look: Look, at: Any, around: list[str | None]) -> Key:
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
                return self._looked_up(Look(target, table), at, [None])
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
