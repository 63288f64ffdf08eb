"""libcst building blocks the script transformers share: parse a script, read and set a call's
keyword arguments, add imports and code after them. Formatting and comments are kept: libcst
round-trips every byte it does not change."""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst

from bisector.common.errors import UserError
from bisector.common.source_text import SourceError, read_source
from bisector.fixers._cst import dotted

__all__ = [
    "MARK",
    "code_of",
    "dotted",
    "ensure_imports",
    "insert_after_imports",
    "read_script",
    "read_text",
    "set_kwarg",
]

# The prefix of every name bisector writes into a user's script, so it never takes one of theirs.
MARK = "_bisector"


def read_script(path: str, option: str) -> tuple[str, cst.Module]:
    """The script's text (as Python reads it: see bisector.common.source_text) and module; a user error
    naming the option when it cannot be read or does not parse."""
    text = read_text(path, option)
    try:
        return text, cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        raise UserError(f"cannot parse {option} {path}: {exc.message}") from None


def read_text(path: str, option: str) -> str:
    """The text Python reads from path; a one-line user error naming the option when it cannot."""
    try:
        return read_source(path)
    except (OSError, SourceError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(f"cannot read {option} {path}: {why}") from None


def code_of(node: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(node)


def set_kwarg(call: cst.Call, name: str, value: str) -> cst.Call:
    """The call with `name=value`: replaced when it differs, appended when missing."""
    args = list(call.args)
    for i, a in enumerate(args):
        if a.keyword is not None and a.keyword.value == name:
            if code_of(a.value).strip() == value:
                return call
            args[i] = a.with_changes(value=cst.parse_expression(value))
            return call.with_changes(args=args)
    if args and args[-1].comma is cst.MaybeSentinel.DEFAULT:
        args[-1] = args[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    no_space = cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace(""))
    args.append(cst.Arg(keyword=cst.Name(name), value=cst.parse_expression(value), equal=no_space))
    return call.with_changes(args=args)


def _is_import(node: cst.CSTNode) -> bool:
    return isinstance(node, cst.SimpleStatementLine) and any(
        isinstance(s, (cst.Import, cst.ImportFrom)) for s in node.body
    )


def _is_docstring(node: cst.CSTNode) -> bool:
    return (
        isinstance(node, cst.SimpleStatementLine)
        and isinstance(node.body[0], cst.Expr)
        and isinstance(node.body[0].value, cst.SimpleString)
    )


def ensure_imports(source: str, lines: Sequence[str]) -> str:
    """Each import line the source lacks, after its last import (after the docstring when it has none)."""
    for line in lines:
        if line in source.splitlines():
            continue
        module = cst.parse_module(source)
        body = list(module.body)
        at = 0
        for i, node in enumerate(body):
            if _is_import(node):
                at = i + 1
            elif i == 0 and _is_docstring(node):
                at = 1
        body.insert(at, cst.parse_statement(line + "\n"))
        source = module.with_changes(body=body).code
    return source


def insert_after_imports(source: str, code: str) -> str:
    """code after the source's last top-level import, two blank lines before it."""
    module = cst.parse_module(source)
    body = list(module.body)
    at = 0
    for i, node in enumerate(body):
        if _is_import(node):
            at = i + 1
    new_nodes = list(cst.parse_module(code).body)
    if new_nodes:
        new_nodes[0] = new_nodes[0].with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine()])
    return module.with_changes(body=body[:at] + new_nodes + body[at:]).code
