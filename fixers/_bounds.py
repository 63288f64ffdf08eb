"""Bounding a container in the user's source: the named bound written next to it, every binding
of it rebound to a bounded one, and a trim after every statement that grows it."""

from __future__ import annotations

import re
from collections.abc import Callable

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers._containers import Container, item_of, pure
from bisector.fixers._cst import GROW_METHODS
from libcst.metadata import PositionProvider

KEEP_LAST = 4  # items a bounded container keeps: the latest few stay readable
MEMO_MAX = 8  # entries a bounded memo keeps: small enough that a probe's schedule sees it stop growing
KEEP_NAME = "_BISECTOR_KEEP_LAST"  # the named bound written into the user's code, next to the container
MEMO_NAME = "_BISECTOR_MEMO_MAX"
KEEP_WHY = "items each bounded container keeps; the oldest go first"


def constant_line(source: str, name: str, value: int, why: str) -> str:
    """`NAME = value  # why`, the bound written into the user's code next to the container; "" when
    the file already defines NAME (a second container of the file shares it)."""
    if re.search(rf"^{re.escape(name)}\s*=", source, re.M):
        return ""
    return f"{name} = {value}  # {why}\n"


def with_bound(source: str, name: str, value: int, why: str, line: int) -> str:
    """source with `NAME = value  # why` just before the top-level statement holding line, unless
    the file defines NAME already (constant_line): the named bound every bounding fixer writes."""
    code = constant_line(source, name, value, why)
    return with_block(source, code, line) if code else source


def with_block(source: str, code: str, before_line: int) -> str:
    """code (top-level statements) inserted just before the top-level statement holding
    before_line, taking over its leading blank lines and comments so the two sit together."""
    module = _cst.parse(source)
    if module is None:
        return source
    wrapper = cst.MetadataWrapper(module)
    pos = wrapper.resolve(PositionProvider)
    body = list(wrapper.module.body)
    at = next((i for i, node in enumerate(body) if pos[node].end.line >= before_line), len(body))
    stmts = list(cst.parse_module(code).body)
    if at < len(body):
        stmts[0] = stmts[0].with_changes(leading_lines=body[at].leading_lines)
        body[at] = body[at].with_changes(leading_lines=[])
    body[at:at] = stmts
    return wrapper.module.with_changes(body=body).code


def rebind(
    source: str, c: Container, value: Callable[[cst.BaseExpression], cst.BaseExpression | None]
) -> tuple[str, int]:
    """Every binding of c (its definition and each reset) with value(old) in place of the old value
    (None leaves it). Returns the source and how many bindings changed, and -1 when some binding
    assigns what value() cannot bound (a reset to a plain list would unbound the container)."""
    module = _cst.parse(source)
    if module is None:
        return source, 0
    changed = 0
    unbounded = False

    class T(_cst.ScopedTransformer):
        def _mine(self, target: cst.BaseExpression) -> bool:
            expr = _cst.dotted(target)
            if c.scope == "class" and self.kinds[-1:] == ["class"] and self.stack[-1] == c.cls:
                return expr == c.name  # the class body's definition
            if c.scope == "module" and isinstance(target, cst.Name):
                return expr == c.name and (not self.stack or c.name in self.globals)
            return c.scope in ("self", "class") and c.refers(expr, self.stack, self.cls_of)

        globals: set[str] = set()

        def visit_Global(self, node: cst.Global) -> None:
            T.globals = T.globals | {n.name.value for n in node.names}

        def _new(self, old: cst.BaseExpression) -> cst.BaseExpression:
            nonlocal changed, unbounded
            new = value(old)
            if new is None:
                unbounded = True
                return old
            changed += 1
            return new

        def leave_Assign(self, o: cst.Assign, u: cst.Assign) -> cst.Assign:
            if len(u.targets) == 1 and self._mine(u.targets[0].target):
                return u.with_changes(value=self._new(u.value))
            return u

        def leave_AnnAssign(self, o: cst.AnnAssign, u: cst.AnnAssign) -> cst.AnnAssign:
            if u.value is not None and self._mine(u.target):
                return u.with_changes(value=self._new(u.value))
            return u

        def leave_Param(self, o: cst.Param, u: cst.Param) -> cst.Param:
            if c.scope == "default" and u.name.value == c.name and ".".join(self.stack) == c.func and u.default:
                return u.with_changes(default=self._new(u.default))
            return u

    T.globals = set()
    new = module.visit(T()).code
    return new, (-1 if unbounded else changed)


def trim_grows(source: str, c: Container, keep: str, reach: set[str] | None = None) -> str | None:
    """`del X[:-keep]` after every statement that grows list c (as the code names it there: `self.x`,
    `Net.x`, `X`), in the functions of reach (every function when None)."""
    module = _cst.parse(source)
    if module is None:
        return None
    done = 0

    class T(_cst.ScopedTransformer):
        def leave_SimpleStatementLine(self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine):
            nonlocal done
            if reach is not None and ".".join(self.stack) not in reach:
                return u
            for stmt in u.body:
                call = _cst.call_of(stmt)
                if call and call[1] in GROW_METHODS and c.refers(call[0], self.stack, self.cls_of):
                    done += 1
                    trim = cst.parse_statement(f"del {call[0]}[:-{keep}]  # keep only the latest {keep}\n")
                    return cst.FlattenSentinel([u, trim])
            return u

    after = module.visit(T()).code
    return after if done else None


def trim_item_grows(source: str, c: Container, keep: str, reach: set[str] | None = None) -> str | None:
    """`del X[k][:-keep]` after every statement that grows a list held in dict c under key k
    (`X[k].append(v)`, `X.setdefault(k, []).append(v)`), in the functions of reach (every function
    when None). None when some such statement's key is not pure (written twice, a call would run
    twice) or nothing grows."""
    module = _cst.parse(source)
    if module is None:
        return None
    done = 0
    impure = False

    class T(_cst.ScopedTransformer):
        def leave_SimpleStatementLine(self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine):
            nonlocal done, impure
            if reach is not None and ".".join(self.stack) not in reach:
                return u
            for stmt in u.body:
                call = stmt.value if isinstance(stmt, cst.Expr) and isinstance(stmt.value, cst.Call) else None
                f = call.func if call is not None else None
                if not isinstance(f, cst.Attribute) or f.attr.value not in GROW_METHODS:
                    continue
                item = item_of(f.value)
                if item is None or not c.refers(_cst.dotted(item[0]), self.stack, self.cls_of):
                    continue
                if not pure(item[1]):
                    impure = True
                    return u
                done += 1
                code = cst.Module(body=[])
                owner = f"{code.code_for_node(item[0])}[{code.code_for_node(item[1])}]"
                trim = cst.parse_statement(f"del {owner}[:-{keep}]  # keep only the latest {keep}\n")
                return cst.FlattenSentinel([u, trim])
            return u

    after = module.visit(T()).code
    return after if done and not impure else None
