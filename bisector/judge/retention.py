"""Retention paths in the parent: what a retention probe found (probe/retention.py), per culprit,
with the source lines that create and grow each container.

``paths(data, ...)`` turns the probe's per-span rows into the culprit's ``retention`` figure (the
contract the fixers read: root, path, container, growth per call and per new shape, keys, and
``defined_at``/``mutated_at`` as ``file:line`` relative to the project). ``sites`` reads the
user's files with libcst: the assignment that defines a container (``self.x = ...`` in
``__init__``, a module-level ``NAME = ...``, a class-body assignment, ``register_buffer``, an
``@lru_cache`` decorator, the handler's construction) and the statements that grow it
(``.append``/``.extend``/``.add``/``[k] = ``/``setdefault``, ``x = torch.cat([x, ...])``,
``register_forward_hook(``, the calls of a cached function, logging calls).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from bisector.judge.owners import project_roots

TOP = 5
MAX_FILES = 60  # project files read for sites
MAX_SITES = 6  # mutation lines kept per path
MUTATORS = frozenset(
    {"append", "extend", "add", "insert", "appendleft", "extendleft", "update", "setdefault", "__setitem__", "put"}
)
LOG_CALLS = frozenset({"debug", "info", "warning", "warn", "error", "critical", "exception", "log"})
GROW_FUNCS = frozenset({"cat", "concat", "concatenate", "stack", "vstack", "hstack", "row_stack", "append"})


def paths(data: Mapping[str, Any] | None, model_path: str, project: str | None = None) -> tuple[dict[str, Any], ...]:
    """The culprit's retention figure from a retention probe's result (its meta["retention"]),
    biggest first, at most TOP; () when the probe found nothing that grows."""
    if not data:
        return ()
    repeat = data.get("repeat") or {}
    novel = data.get("novel") or {}
    per_call = {r["path"]: r for r in repeat.get("rows", [])}
    per_shape = {r["path"]: r for r in novel.get("rows", [])}
    base = project or _project_root(model_path)
    out = []
    for path in list(dict.fromkeys([*per_call, *per_shape])):
        rc, rn = per_call.get(path), per_shape.get(path)
        row = rc or rn
        assert row is not None
        if row["container"] == "Tensor" and rc is None:
            # A tensor attribute that is only larger after larger inputs is the last input's
            # size (self.last = y), not a bank that grows.
            continue
        call_rate = float(rc["entries_per_call"]) if rc else 0.0
        shape_rate = max(0.0, float(rn["entries_per_call"]) - call_rate) if rn else 0.0
        if call_rate <= 0 and shape_rate <= 0:
            continue
        out.append(
            {
                "root": row["root"],
                "path": path,
                "container": row["container"],
                "entries_per_call": round(call_rate, 3),
                "entries_per_new_shape": round(shape_rate, 3),
                "bytes_per_call": (rc or {}).get("bytes_per_call"),
                "keys": (rc or {}).get("keys") or (rn or {}).get("keys") or "",
                "attr": row.get("attr", ""),
                "module": row.get("module", ""),
                "qualname": row.get("qualname", ""),
                "_file": row.get("file", ""),
            }
        )
    out.sort(key=lambda r: (-(r["bytes_per_call"] or 0.0), -r["entries_per_call"], -r["entries_per_new_shape"]))
    rows = []
    for r in out[:TOP]:
        file = r.pop("_file")
        mention = r["module"].rsplit(".", 1)[-1] if r["root"] == "global" else ""
        defined, mutated = sites(r, _files(file, model_path, base, r["attr"], mention), base)
        rows.append({**r, "defined_at": defined, "mutated_at": list(mutated)})
    return tuple(rows)


def _project_root(model_path: str) -> str:
    return project_roots(model_path)[-1]


def _under(path: str, root: str) -> bool:
    path, root = os.path.abspath(path), os.path.abspath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _files(file: str, model_path: str, base: str, attr: str, module: str = "") -> list[str]:
    """The files to read: the container owner's file, the model's, then the model folder's other
    files that mention the name (where a hook is registered or a global is grown); a global's,
    only those that also name its module (another file's global of the same name is not it)."""
    out: list[str] = []
    for f in (file, model_path):
        if f and f.endswith(".py") and os.path.isfile(f) and _under(f, base) and f not in out:
            out.append(os.path.abspath(f))
    folder = Path(model_path).resolve().parent
    for f in sorted(folder.glob("*.py"))[:MAX_FILES]:
        name = str(f)
        if name in out:
            continue
        try:
            text = f.read_text(errors="replace")
            if attr and attr in text and (not module or module in text):
                out.append(name)
        except OSError:
            pass
    return out


@dataclass(frozen=True)
class _Site:
    file: str
    line: int
    kind: str  # defined | mutated
    scope: str  # the enclosing "Class.function" chain
    receiver: str = ""  # the last name of a register_*_hook call's receiver


def sites(row: Mapping[str, Any], files: Sequence[str], base: str) -> tuple[str, tuple[str, ...]]:
    """(defined_at, mutated_at) of a retention row, as "rel/file.py:line"."""
    found: list[_Site] = []
    for f in files:
        try:
            source = Path(f).read_text()
        except (OSError, UnicodeDecodeError):
            continue
        found += find_sites(source, row, rel(f, base))
    defined = [s for s in found if s.kind == "defined"]
    mutated = [s for s in found if s.kind == "mutated"]
    if row["root"] == "hooks":
        # Registrations on the module the path names (self.conv1.register_forward_hook) first.
        owner = str(row["path"]).rsplit(".", 2)[-2] if str(row["path"]).count(".") >= 1 else ""
        mine = [s for s in mutated if s.receiver == owner]
        mutated = mine or mutated
    qual = str(row.get("qualname") or "").split(".")[0]
    if qual and row["root"] in ("module-attr", "class-attr"):
        inside = [s for s in defined if s.scope.split(".")[0] == qual]
        defined = inside or defined
        init = [s for s in defined if s.scope.endswith("__init__")]
        defined = init or defined
    where = f"{defined[0].file}:{defined[0].line}" if defined else ""
    lines = tuple(dict.fromkeys(f"{s.file}:{s.line}" for s in mutated))[:MAX_SITES]
    return where, lines


def rel(path: str, base: str) -> str:
    return os.path.relpath(path, base) if _under(path, base) else os.path.basename(path)


def find_sites(source: str, row: Mapping[str, Any], shown: str) -> list[_Site]:
    """The lines of one file that define or grow the container of a retention row."""
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError:
        return []
    visitor = _SiteVisitor(row, shown)
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


class _SiteVisitor(cst.CSTVisitor):
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
        self.out: list[_Site] = []
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
        self.out.append(_Site(self.shown, line, kind, ".".join(self.scope), receiver))

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


# -- how it reads ------------------------------------------------------------------------------------------


def describe(row: Mapping[str, Any], per: str = "call") -> str:
    """One line: 'held by encoder.conv1._forward_hooks (OrderedDict, +1 entry per call, keys are
    input lengths), registered at hook_leak.py:22'."""
    growth = []
    if row.get("entries_per_call"):
        growth.append(f"+{_n(row['entries_per_call'])} {_unit(row, row['entries_per_call'])} per {per}")
    if row.get("entries_per_new_shape"):
        n = row["entries_per_new_shape"]
        growth.append(f"+{_n(n)} {_unit(row, n)} per new shape")
    if row.get("keys"):
        growth.append(f"keys are {row['keys']}")
    text = f"held by {row['path']} ({', '.join([row['container'], *growth])})"
    mutated = list(row.get("mutated_at") or [])
    verb = "registered" if row.get("root") == "hooks" else "grown"
    if mutated:
        text += f", {verb} at {', '.join(mutated[:2])}"
    if row.get("defined_at") and row.get("root") != "hooks":
        text += f", defined at {row['defined_at']}"
    return text


def _n(x: float) -> str:
    return f"{x:g}" if x >= 10 or float(x).is_integer() else f"{x:.2g}"


def _unit(row: Mapping[str, Any], n: float) -> str:
    one = n == 1
    if row.get("container") == "Tensor":
        return "row" if one else "rows"
    if row.get("root") == "hooks":
        return "hook" if one else "hooks"
    return "entry" if one else "entries"


def hint(rows: Iterable[Mapping[str, Any]], per: str = "call") -> str | None:
    """find's hint for a culprit whose retention path is known: the container and the line."""
    rows = list(rows)
    if not rows:
        return None
    top = rows[0]
    if top.get("container") == "Tensor":
        what = "a tensor grown by concatenation: keep its last N rows after each one"
    else:
        what = {
            "hooks": "hooks registered on every call pile up: register once (or keep the handle and remove it)",
            "lru-cache": "an unbounded lru_cache fills: give it a finite maxsize",
            "logging": "a logging handler keeps every record and what it refers to: bound or flush it",
        }.get(str(top.get("root")), "a container that only grows: bound it")
    return f"{describe(top, per)}: {what}"
