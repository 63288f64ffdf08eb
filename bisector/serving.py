"""Serving scripts shared by several models: find the session that loads a model's .onnx, write
that model's ONNX Runtime settings for it alone, and read them back.

A session is this model's when its path expression names ``<key>.onnx``: a literal
(``"artifacts/tagger.onnx"``) or a path built from a name (``ARTIFACTS / f"{name}.onnx"``), in
which case the script builds every model's session in one place and the settings go into a
per-model table, ``_BISECTOR_SESSIONS``, that the shared code looks up by that name. Every edit is
idempotent per setting: the table entry is merged key by key, helpers and wrappers are added only
where missing. No file-wide marker: a second run adds what is missing and nothing else.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass
from typing import Any, Mapping

TABLE = "_BISECTOR_SESSIONS"


@dataclass(frozen=True)
class Site:
    """One `InferenceSession(...)` call in a script."""

    line: int
    key_code: str  # the expression naming the model at the site: a parameter (`name`) or a literal
    literal: str | None  # the model's key when the path names one model's file


def _unwrap(node: Any) -> Any:
    import libcst as cst

    while isinstance(node, cst.Call) and node.args and _dotted(node.func) in ("str", "os.fspath", "Path", "pathlib.Path"):
        node = node.args[0].value
    return node


def _dotted(node: Any) -> str:
    from bisector.fixers._cst import dotted

    return dotted(node)


def _path_key(node: Any, assigns: Mapping[str, Any], depth: int = 0) -> tuple[str | None, str | None]:
    """(literal key, key expression) of a path expression ending in `<key>.onnx`."""
    import libcst as cst

    node = _unwrap(node)
    code = cst.Module(body=[]).code_for_node
    if isinstance(node, cst.SimpleString):
        m = re.search(r"([^/\\]+)\.onnx$", node.evaluated_value if isinstance(node.evaluated_value, str) else "")
        return (m.group(1), repr(m.group(1))) if m else (None, None)
    if isinstance(node, cst.FormattedString):
        parts = list(node.parts)
        if len(parts) >= 2 and isinstance(parts[-1], cst.FormattedStringText) and parts[-1].value.endswith(".onnx"):
            tail = parts[-1].value[: -len(".onnx")]
            if tail == "" or tail.endswith("/"):
                if isinstance(parts[-2], cst.FormattedStringExpression):
                    return None, code(parts[-2].expression)
            m = re.search(r"([^/\\{}]+)$", tail)
            if m and not isinstance(parts[-2], cst.FormattedStringExpression):
                return m.group(1), repr(m.group(1))
        return None, None
    if isinstance(node, cst.BinaryOperation):
        return _path_key(node.right, assigns, depth)
    if isinstance(node, cst.Name) and node.value in assigns and depth < 3:
        return _path_key(assigns[node.value], assigns, depth + 1)
    return None, None


def _session_path_arg(call: Any) -> Any:
    for a in call.args:
        if a.keyword is not None and a.keyword.value == "path_or_bytes":
            return a.value
    positional = [a for a in call.args if a.keyword is None]
    return positional[0].value if positional else None


def find_sites(source: str) -> list[Site]:
    """Every InferenceSession call, with what names its model."""
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider

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
            if _dotted(node.func) == "_bisector_session":
                inner = node.args[0].value if node.args else None
                if inner is not None:
                    inner.visit(self)
                return False
            if _dotted(node.func).endswith("InferenceSession"):
                path = _session_path_arg(node)
                literal, key_code = _path_key(path, {**self.assigns[0], **self.assigns[-1]}) if path is not None else (None, None)
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
    return None, f"no session loading {key}.onnx found (sessions at lines {', '.join(str(s.line) for s in sites)}); name the model's artifact with `artifact = \"...\"`"


def aliases(source: str) -> dict[str, str]:
    """How the script imports onnxruntime and numpy ("ort", "np"), "" when it does not."""
    out = {"onnxruntime": "", "numpy": ""}
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return out
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in out and not out[a.name]:
                    out[a.name] = a.asname or a.name
    return out


def read_table(source: str) -> dict[str, Any]:
    """The per-model settings table as written, {} when there is none."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) and node.targets[0].id == TABLE:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


def entry_for(settings: Any, plan: Any) -> dict[str, Any]:
    """A model's table entry from the kept runtime settings."""
    entry: dict[str, Any] = {}
    if settings.session_options:
        entry["session_options"] = dict(sorted(settings.session_options.items()))
    if settings.provider_options:
        entry["provider_options"] = dict(sorted(settings.provider_options.items()))
    if settings.run_options:
        entry["run_options"] = dict(sorted(settings.run_options.items()))
    if settings.warmup_largest:
        entry["warm_up_largest"] = largest_sizes(plan, settings.round_multiple)
    return entry


def largest_sizes(plan: Any, multiple: int = 0) -> list[dict[int, int]]:
    """Per input position, the largest size of each varying axis (the declared ranges' maxima)."""
    if plan is None or plan.use_hook:
        return []
    out = []
    for spec in plan.inputs:
        sizes = {}
        for i, d in enumerate(spec.dims):
            if isinstance(d, str):
                n = int(plan.dims[d][1])
                sizes[i] = n + (-n) % multiple if multiple else n
        out.append(sizes)
    return out


def _table_code(table: Mapping[str, Any]) -> str:
    lines = [f"{TABLE} = {{  # bisector: ONNX Runtime settings per model, looked up by the model's name"]
    for key, entry in table.items():
        lines.append(f"    {key!r}: {entry!r},")
    return "\n".join(lines) + "\n}\n"


def helpers_code(alias: Mapping[str, str]) -> str:
    from bisector import serving_helpers

    code = []
    for name in serving_helpers.HELPER_NAMES:
        src = inspect.getsource(getattr(serving_helpers, name))
        src = re.sub(r"\bonnxruntime\.", f"{alias['onnxruntime']}.", src)
        src = re.sub(r"\bnumpy\.", f"{alias['numpy']}.", src)
        code.append(src)
    return "\n\n".join(code)


def patch_serving(source: str, key: str, entry: Mapping[str, Any]) -> tuple[str, str]:
    """The script with this model's settings for its session alone; (new text, note)."""
    import libcst as cst

    from bisector.patch import _code, _ensure_imports, _insert_after_imports, _set_kwarg

    if not entry:
        return source, ""
    site, note = site_for(source, key)
    if site is None:
        return source, note
    # A literal path names the model as the site will look it up (a script serving one model
    # from "model.onnx" keys its entry "model", whatever the model's own name).
    key = site.literal if site.literal is not None else key
    alias = aliases(source)
    for mod, default in (("onnxruntime", "onnxruntime"), ("numpy", "numpy")):
        if not alias[mod]:
            source = _ensure_imports(source, [f"import {default}"])
            alias[mod] = default
    # The table: this model's entry merged setting by setting.
    table = read_table(source)
    merged = dict(table)
    current = dict(merged.get(key, {}))
    for k, v in entry.items():
        current[k] = {**current.get(k, {}), **v} if isinstance(v, dict) and isinstance(current.get(k), dict) else v
    merged[key] = current
    module = cst.parse_module(source)
    if merged != table:
        new_table = cst.parse_module(_table_code(merged)).body
        body = list(module.body)
        at = next((i for i, n in enumerate(body) if isinstance(n, cst.SimpleStatementLine) and len(n.body) == 1
                   and isinstance(n.body[0], cst.Assign) and _dotted(n.body[0].targets[0].target) == TABLE), None)
        if at is not None:
            body[at] = new_table[0].with_changes(leading_lines=body[at].leading_lines)
            source = module.with_changes(body=body).code
        else:
            source = _insert_after_imports(source, _table_code(merged))
    defined = {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    from bisector import serving_helpers

    if not set(serving_helpers.HELPER_NAMES) <= defined:
        missing = [n for n in serving_helpers.HELPER_NAMES if n not in defined]
        code = helpers_code(alias)
        parts = [p for p in code.split("\n\n\n") if any(f"def {n}(" in p for n in missing)] if defined & set(serving_helpers.HELPER_NAMES) else [code]
        source = _insert_table_after(source, "\n\n\n".join(parts))
    # The site: options from the table before the session is built, the rest after.
    key_code = site.key_code or repr(key)

    from libcst.metadata import MetadataWrapper

    class T(cst.CSTTransformer):
        def visit_Call(self, node: Any) -> bool:
            return _dotted(node.func) != "_bisector_session"  # already ours: leave it as it is

        def leave_Call(self, o: Any, u: Any) -> Any:
            if not _dotted(u.func).endswith("InferenceSession"):
                return u
            # Only the chosen site: the same key expression (a literal for one model's file, or
            # the name the shared code builds paths from).
            sites = find_sites(cst.Module(body=[cst.SimpleStatementLine([cst.Expr(o)])]).code)
            if not sites or (sites[0].key_code or repr(key)) != key_code:
                return u
            options = next((a.value for a in u.args if a.keyword is not None and a.keyword.value == "sess_options"), None)
            positional = [a for a in u.args if a.keyword is None]
            if options is None and len(positional) >= 2:
                options = positional[1].value
                u = u.with_changes(args=[a for a in u.args if a is not positional[1]])
            opts = _code(options) if options is not None else "None"
            u = _set_kwarg(u, "sess_options", f"_bisector_session_options({key_code}, {opts})")
            return cst.Call(func=cst.Name("_bisector_session"), args=[cst.Arg(u, comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))), cst.Arg(cst.parse_expression(key_code))])

    return MetadataWrapper(cst.parse_module(source)).visit(T()).code, ""


def _insert_table_after(source: str, code: str) -> str:
    """Helpers go right after the table (after the imports when there is none)."""
    import libcst as cst

    module = cst.parse_module(source)
    body = list(module.body)
    at = next((i + 1 for i, n in enumerate(body) if isinstance(n, cst.SimpleStatementLine) and len(n.body) == 1
               and isinstance(n.body[0], cst.Assign) and _dotted(n.body[0].targets[0].target) == TABLE), None)
    if at is None:
        from bisector.patch import _insert_after_imports

        return _insert_after_imports(source, code)
    nodes = list(cst.parse_module(code).body)
    nodes[0] = nodes[0].with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine()])
    return module.with_changes(body=body[:at] + nodes + body[at:]).code


def read_serving(source: str, key: str) -> dict[str, Any]:
    """The ONNX Runtime settings the script applies to this model's session, as probe overrides:
    its table entry, and literal settings on the SessionOptions it passes (`opts.x = False`)."""
    site, _ = site_for(source, key)
    if site is None:
        return {}
    out: dict[str, Any] = {}
    entry = read_table(source).get(key if site.literal is None or site.literal == key else site.literal, {})
    if entry.get("session_options"):
        out["session_options"] = dict(entry["session_options"])
    if entry.get("provider_options"):
        out["provider_options"] = dict(entry["provider_options"])
    if entry.get("run_options"):
        out["run_options"] = dict(entry["run_options"])
    if entry.get("warm_up_largest") is not None:
        out["warmup"] = "largest"
    literal = _literal_session_options(source, site)
    if literal:
        out["session_options"] = {**literal, **out.get("session_options", {})}
    return out


def _literal_session_options(source: str, site: Site) -> dict[str, Any]:
    """`opts.enable_mem_pattern = False` in the function that builds the site's session, where
    `opts` is what it passes as sess_options."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.Module)):
            continue
        calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call) and getattr(n, "lineno", 0) == site.line
                 and ast.unparse(n.func).endswith("InferenceSession")]
        if not calls:
            continue
        var = next((ast.unparse(k.value) for k in calls[0].keywords if k.arg == "sess_options"), None)
        if var is None and len(calls[0].args) >= 2:
            var = ast.unparse(calls[0].args[1])
        m = re.fullmatch(r"_bisector_session_options\(.+, (.+)\)", var or "")
        var = m.group(1) if m else var
        if not var or not var.isidentifier():
            return {}
        out: dict[str, Any] = {}
        for n in ast.walk(fn):
            if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Attribute) and ast.unparse(n.targets[0].value) == var:
                try:
                    out[n.targets[0].attr] = ast.literal_eval(n.value)
                except ValueError:
                    pass
        return out
    return {}
