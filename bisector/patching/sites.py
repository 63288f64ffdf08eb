"""Where a script handles one model's artifact: the ``InferenceSession(...)`` calls of a serving
script, and the model a path expression names.

A path names the model ``<key>`` when it ends in ``<key>.onnx``: a literal
(``"artifacts/tagger.onnx"``) or a path built from a name (``ARTIFACTS / f"{name}.onnx"``), in
which case the code serves every model in one place and the name is the key expression.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from bisector.patching.cst_edits import code_of, dotted

SESSION_WRAPPER = "_bisector_session"  # bisector's own call around a user's InferenceSession(...)


@dataclass(frozen=True)
class Site:
    """One `InferenceSession(...)` call in a script."""

    line: int
    key_code: str  # the expression naming the model at the site: a parameter (`name`) or a literal
    literal: str | None  # the model's key when the path names one model's file


_PATH_WRAPPERS = ("str", "os.fspath", "Path", "pathlib.Path")


def _unwrap(node: Any) -> Any:
    # str(...), os.fspath(...), Path(...) around the path expression say nothing of the model
    while isinstance(node, cst.Call) and node.args and dotted(node.func) in _PATH_WRAPPERS:
        node = node.args[0].value
    return node


def path_key(node: Any, assigns: Mapping[str, Any], depth: int = 0) -> tuple[str | None, str | None]:
    """(literal key, key expression) of a path expression ending in `<key>.onnx`."""
    node = _unwrap(node)
    if isinstance(node, cst.SimpleString):
        m = re.search(r"([^/\\]+)\.onnx$", node.evaluated_value if isinstance(node.evaluated_value, str) else "")
        return (m.group(1), repr(m.group(1))) if m else (None, None)
    if isinstance(node, cst.FormattedString):
        parts = list(node.parts)
        if len(parts) >= 2 and isinstance(parts[-1], cst.FormattedStringText) and parts[-1].value.endswith(".onnx"):
            tail = parts[-1].value[: -len(".onnx")]
            if tail == "" or tail.endswith("/"):
                if isinstance(parts[-2], cst.FormattedStringExpression):
                    return None, code_of(parts[-2].expression)
            m = re.search(r"([^/\\{}]+)$", tail)
            if m and not isinstance(parts[-2], cst.FormattedStringExpression):
                return m.group(1), repr(m.group(1))
        return None, None
    if isinstance(node, cst.BinaryOperation):
        return path_key(node.right, assigns, depth)
    if isinstance(node, cst.Name) and node.value in assigns and depth < 3:
        return path_key(assigns[node.value], assigns, depth + 1)
    return None, None


def _session_path_arg(call: Any) -> Any:
    for a in call.args:
        if a.keyword is not None and a.keyword.value == "path_or_bytes":
            return a.value
    positional = [a for a in call.args if a.keyword is None]
    return positional[0].value if positional else None


def find_sites(source: str) -> list[Site]:
    """Every InferenceSession call, with what names its model."""
    wrapper = MetadataWrapper(cst.parse_module(source))
    sites: list[Site] = []

    class V(cst.CSTVisitor):
        METADATA_DEPENDENCIES = (PositionProvider,)

        def __init__(self) -> None:
            self.assigns: list[dict[str, Any]] = [{}]

        def visit_FunctionDef(self, node: Any) -> None:
            self.assigns.append({})

        def leave_FunctionDef(self, node: Any) -> None:
            self.assigns.pop()

        def visit_Assign(self, node: Any) -> None:
            if len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
                self.assigns[-1][node.targets[0].target.value] = node.value

        def visit_Call(self, node: Any) -> bool:
            if dotted(node.func) == SESSION_WRAPPER:
                inner = node.args[0].value if node.args else None
                if inner is not None:
                    inner.visit(self)
                return False
            if dotted(node.func).endswith("InferenceSession"):
                path = _session_path_arg(node)
                scope = {**self.assigns[0], **self.assigns[-1]}
                literal, key_code = path_key(path, scope) if path is not None else (None, None)
                line = self.get_metadata(PositionProvider, node).start.line
                sites.append(Site(line, key_code or "", literal))
            return True

    wrapper.visit(V())
    return sites


def _string_literals(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def site_for(source: str, key: str) -> tuple[Site | None, str]:
    """The session that serves the model named key, and a note when there is none (or a doubt)."""
    sites = find_sites(source)
    if not sites:
        return None, "no onnxruntime.InferenceSession(...) found"
    mine = [s for s in sites if s.literal == key]
    if mine:
        return mine[0], ""
    shared = [s for s in sites if s.literal is None and s.key_code]
    if shared and (key in _string_literals(source) or len(sites) == 1):
        return shared[0], ""
    if len(sites) == 1:
        return sites[0], ""  # the script serves one model: the one it was named for
    lines = ", ".join(str(s.line) for s in sites)
    return None, (
        f"no session loading {key}.onnx found (sessions at lines {lines}); "
        'name the model\'s artifact with `artifact = "..."`'
    )
