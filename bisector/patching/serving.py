"""Serving scripts shared by several models: write one model's ONNX Runtime settings for its
session alone, and read them back.

The settings go into a per-model table, ``_BISECTOR_SESSIONS``, that the helpers copied into the
script (bisector.patching.script_helpers) look up by the model's name at the session that loads
its ``.onnx`` (bisector.patching.sites): a script that builds every model's session in one place
gets each model's settings, and only its own. Every edit is idempotent per setting: the table
entry is merged key by key, helpers and wrappers are added only where missing. No file-wide
marker: a second run adds what is missing and nothing else.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import libcst as cst

from bisector.patching.cst_edits import code_of, dotted, ensure_imports, insert_after_imports, set_kwarg
from bisector.patching.flow import Flow
from bisector.patching.script_helpers import SERVING_HELPERS, source_of
from bisector.patching.settings import largest_sizes
from bisector.patching.sites import SESSION_WRAPPER, Site, place

TABLE = "_BISECTOR_SESSIONS"


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


def _is_table(node: Any) -> bool:
    return (
        isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id == TABLE
    )


def read_table(source: str) -> dict[str, Any]:
    """The per-model settings table as written, {} when there is none."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    for node in tree.body:
        if _is_table(node):
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


def _table_code(table: Mapping[str, Any]) -> str:
    lines = [f"{TABLE} = {{  # bisector: ONNX Runtime settings per model, looked up by the model's name"]
    for key, entry in table.items():
        lines.append(f"    {key!r}: {entry!r},")
    return "\n".join(lines) + "\n}\n"


def helpers_code(alias: Mapping[str, str]) -> str:
    """The serving helpers' source, with `onnxruntime.` and `numpy.` as the script imports them."""

    return source_of(SERVING_HELPERS, alias)


def _cst_table_index(body: list[Any]) -> int | None:
    return next(
        (
            i
            for i, n in enumerate(body)
            if isinstance(n, cst.SimpleStatementLine)
            and len(n.body) == 1
            and isinstance(n.body[0], cst.Assign)
            and dotted(n.body[0].targets[0].target) == TABLE
        ),
        None,
    )


class Served(NamedTuple):
    text: str  # the script with the settings
    note: str  # what the user should know (or why nothing was written)
    placed: bool  # the settings are in the script (applied, or in the table with a comment saying where)


def patch_serving(source: str, key: str, entry: Mapping[str, Any]) -> Served:
    """The script with this model's settings for its sessions alone (see bisector.patching.sites)."""

    if not entry:
        return Served(source, "", False)
    flow = Flow(source)
    where = place(flow, key)
    if not where.sites and not where.unproven:
        return Served(source, where.note, False)
    key = where.table_key
    # The sessions first (the flow's nodes are this text's): wrapped and keyed, or, where no key
    # can be proven, a comment saying where to pass it.
    if where.sites:
        source = flow.module.visit(_WrapSession(where.sites)).code
    else:
        source = flow.module.visit(_Comment(where.unproven)).code
    alias = aliases(source)
    for mod, default in (("onnxruntime", "onnxruntime"), ("numpy", "numpy")):
        if not alias[mod]:
            source = ensure_imports(source, [f"import {default}"])
            alias[mod] = default
    needs = sorted({i for s in where.sites for i in s.key.imports})
    if needs:
        source = ensure_imports(source, needs)
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
        at = _cst_table_index(body)
        if at is not None:
            body[at] = new_table[0].with_changes(leading_lines=body[at].leading_lines)
            source = module.with_changes(body=body).code
        else:
            source = insert_after_imports(source, _table_code(merged))
    defined = {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    if not set(SERVING_HELPERS) <= defined:
        missing = [n for n in SERVING_HELPERS if n not in defined]
        code = helpers_code(alias)
        parts = [code]
        if defined & set(SERVING_HELPERS):
            parts = [p for p in code.split("\n\n\n") if any(f"def {n}(" in p for n in missing)]
        source = _insert_table_after(source, "\n\n\n".join(parts))
    return Served(source, where.note, True)


def _rekeyed(call: Any, key_code: str) -> Any:
    """An already wrapped session re-keyed: `_bisector_session(InferenceSession(...,
    sess_options=_bisector_session_options(K, o)), K)` with K the site's key (a patch of an
    older bisector may have keyed a shared site by one model's name)."""
    inner = call.args[0].value
    args = list(inner.args)
    for i, a in enumerate(args):
        if a.keyword is not None and a.keyword.value == "sess_options" and isinstance(a.value, cst.Call):
            if dotted(a.value.func) == "_bisector_session_options" and a.value.args:
                first = a.value.args[0].with_changes(value=cst.parse_expression(key_code))
                args[i] = a.with_changes(value=a.value.with_changes(args=[first, *a.value.args[1:]]))
    outer = list(call.args)
    outer[0] = outer[0].with_changes(value=inner.with_changes(args=args))
    outer[1] = outer[1].with_changes(value=cst.parse_expression(key_code))
    return call.with_changes(args=outer)


class _WrapSession(cst.CSTTransformer):
    """The site's options from the table before the session is built, the rest after:
    `_bisector_session(InferenceSession(..., sess_options=_bisector_session_options(key, opts)), key)`,
    key the site's key expression (the variable that carries the model's name, or a literal)."""

    def __init__(self, sites: Sequence[Site]) -> None:
        self.wrap = {id(s.node): s.key_code for s in sites if s.wrapped is None}
        self.rekey = {id(s.node): s.key_code for s in sites if s.wrapped is not None}

    def leave_Call(self, o: Any, u: Any) -> Any:
        if dotted(u.func) == SESSION_WRAPPER and len(u.args) >= 2 and id(o.args[0].value) in self.rekey:
            key_code = self.rekey[id(o.args[0].value)]
            return u if code_of(u.args[1].value) == key_code else _rekeyed(u, key_code)
        if id(o) not in self.wrap:
            return u
        key_code = self.wrap[id(o)]
        options = next((a.value for a in u.args if a.keyword is not None and a.keyword.value == "sess_options"), None)
        positional = [a for a in u.args if a.keyword is None]
        if options is None and len(positional) >= 2:
            options = positional[1].value
            u = u.with_changes(args=[a for a in u.args if a is not positional[1]])
        opts = code_of(options) if options is not None else "None"
        u = set_kwarg(u, "sess_options", f"_bisector_session_options({key_code}, {opts})")
        space = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
        return cst.Call(
            func=cst.Name(SESSION_WRAPPER), args=[cst.Arg(u, comma=space), cst.Arg(cst.parse_expression(key_code))]
        )


COMMENT = (
    "# bisector: pass the model's name as NAME to apply _BISECTOR_SESSIONS: "
    "_bisector_session({call}(..., sess_options=_bisector_session_options(NAME, options)), NAME)"
)


class _Comment(cst.CSTTransformer):
    """One comment line above the statement of each session whose model cannot be traced."""

    def __init__(self, sites: Sequence[Site]) -> None:
        self.sites = {id(s.node): s for s in sites}
        self.pending: list[str] = []

    def visit_Call(self, node: Any) -> None:
        if id(node) in self.sites:
            self.pending.append(COMMENT.format(call=dotted(node.func)))

    def _leave(self, o: Any, u: Any) -> Any:
        if not self.pending:
            return u
        text, self.pending = self.pending[0], []
        if any(line.comment is not None and line.comment.value == text for line in u.leading_lines):
            return u
        return u.with_changes(leading_lines=[*u.leading_lines, cst.EmptyLine(comment=cst.Comment(text))])

    def leave_SimpleStatementLine(self, o: Any, u: Any) -> Any:
        return self._leave(o, u)

    def leave_For(self, o: Any, u: Any) -> Any:
        return self._leave(o, u)

    def leave_If(self, o: Any, u: Any) -> Any:
        return self._leave(o, u)

    def leave_With(self, o: Any, u: Any) -> Any:
        return self._leave(o, u)


def _insert_table_after(source: str, code: str) -> str:
    """Helpers go right after the table (after the imports when there is none)."""
    module = cst.parse_module(source)
    body = list(module.body)
    at = _cst_table_index(body)
    if at is None:
        return insert_after_imports(source, code)
    nodes = list(cst.parse_module(code).body)
    nodes[0] = nodes[0].with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine()])
    return module.with_changes(body=body[: at + 1] + nodes + body[at + 1 :]).code


def read_serving(source: str, key: str) -> dict[str, Any]:
    """The ONNX Runtime settings the script applies to this model's session, as probe overrides:
    its table entry where its session looks it up by the model's key, and literal settings on the
    SessionOptions it passes (`opts.x = False`). A session whose model bisector cannot trace gets
    nothing read back: the table is not applied there until the user passes the key."""
    try:
        where = place(source, key)
    except cst.ParserSyntaxError:
        return {}
    if not where.sites:
        return {}
    out: dict[str, Any] = {}
    if all(s.wrapped == s.key_code for s in where.sites):
        entry = read_table(source).get(where.table_key, {})
        if entry.get("session_options"):
            out["session_options"] = dict(entry["session_options"])
        if entry.get("provider_options"):
            out["provider_options"] = dict(entry["provider_options"])
        if entry.get("run_options"):
            out["run_options"] = dict(entry["run_options"])
        if entry.get("warm_up_largest") is not None:
            out["warmup"] = "largest"
    literal = _literal_session_options(source, where.sites[0])
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
        calls = [
            n
            for n in ast.walk(fn)
            if isinstance(n, ast.Call)
            and getattr(n, "lineno", 0) == site.line
            and ast.unparse(n.func).endswith("InferenceSession")
        ]
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
            if (
                isinstance(n, ast.Assign)
                and len(n.targets) == 1
                and isinstance(n.targets[0], ast.Attribute)
                and ast.unparse(n.targets[0].value) == var
            ):
                try:
                    out[n.targets[0].attr] = ast.literal_eval(n.value)
                except ValueError:
                    pass
        return out
    return {}
