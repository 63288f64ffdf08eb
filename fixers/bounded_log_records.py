"""A logging handler that keeps every record: a ``logging.handlers.MemoryHandler`` with no target
(its ``flush()`` clears the buffer only when there is a target, so it never empties) or with a
capacity so large it never flushes, and a ``BufferingHandler`` with such a capacity. Each record
keeps its arguments alive (``log.debug("out %s", tensor)`` keeps the tensor). The edit, where the
handler is created:

- no target: its ``buffer`` becomes ``collections.deque(maxlen=_BISECTOR_KEEP_LAST)``, so the newest
  records stay readable (``handler.buffer[-1]``) and the oldest go first;
- a target: a finite ``capacity=_BISECTOR_KEEP_LAST``, so the buffer is flushed to the target when
  full: the target still receives every record.

A custom handler that appends records to its own list is a list on ``self`` (bounded-containers)."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers._bounds import KEEP_LAST, KEEP_NAME, KEEP_WHY, with_bound
from bisector.fixers._containers import retained
from bisector.fixers.base import LEAK, PYTHON_LEAKS, Candidate, Example, FixTarget, SourceEdit
from libcst.metadata import PositionProvider

HANDLERS = {"MemoryHandler": ("capacity", "flushLevel", "target"), "BufferingHandler": ("capacity",)}
HUGE = 100_000  # records: a capacity at least this large is no bound for a handler that keeps tensors


@dataclass(frozen=True)
class Site:
    """A statement creating a handler that keeps every record: `name = MemoryHandler(...)`."""

    name: str  # what the handler is assigned to: "RECENT", "self.recent"
    line: int  # the statement's line (1-based)
    scope: str  # the enclosing "Class.function" chain, "" at module level
    has_target: bool


class BoundedLogRecords:
    name = "bounded-log-records"
    family = PYTHON_LEAKS
    description = "a logging MemoryHandler that keeps every record: keep the newest few, or flush to its target"
    stages = ("eager", "export")
    kinds = (LEAK,)

    def propose(self, target: FixTarget) -> list[Candidate]:
        # The walker names the handler's buffer (`logging:root.handlers[0].buffer`, or a global's
        # `mod.RECENT.buffer`): then only the handlers it names; without it, every handler in the
        # user's files that keeps every record (they fill whichever logger the region logs to).
        paths = [p for p in retained(target.figures, ("list", "deque")) if p.get("attr") == "buffer"]
        if target.figures.get("retention") and not paths:
            return []
        out = []
        for path, source in target.sources.items():
            for site in unbounded_handlers(source):
                if paths and not any(_names(p, site) for p in paths):
                    continue
                after = bound_handler(source, site)
                if after is None:
                    continue
                how = (
                    f"a finite capacity={KEEP_NAME}: it flushes to its target when full, the target still gets every "
                    "record"
                    if site.has_target
                    else f"its buffer a collections.deque(maxlen={KEEP_NAME}): the newest records stay"
                )
                out.append(
                    Candidate(
                        self.name,
                        f"bound what the logging handler {site.name} keeps to {KEEP_LAST} records ({how}); it kept "
                        "every record and the tensors it logs",
                        edits=(SourceEdit(path, source, after, f"bound {site.name} to {KEEP_LAST} records"),),
                        size=2,
                        bound=KEEP_LAST,
                    )
                )
        return out

    examples = (
        Example(
            "a module-level MemoryHandler without a target and a huge capacity, fed by log.debug in forward",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Encoder",
                sources={
                    "m.py": (
                        "import logging\nimport logging.handlers\n\nlog = logging.getLogger('m')\n"
                        "RECENT = logging.handlers.MemoryHandler(capacity=10**9, flushLevel=logging.CRITICAL + 1)\n"
                        "log.addHandler(RECENT)\n\n\nclass Encoder:\n    def forward(self, x):\n"
                        "        log.debug('out %s', x)\n        return x\n"
                    )
                },
            ),
            True,
            "the newest records stay",
            edited=(
                "import collections\nimport logging\nimport logging.handlers\n\nlog = logging.getLogger('m')\n"
                "_BISECTOR_KEEP_LAST = 4  # items each bounded container keeps; the oldest go first\n"
                "RECENT = logging.handlers.MemoryHandler(capacity=10**9, flushLevel=logging.CRITICAL + 1)\n"
                "RECENT.buffer = collections.deque(maxlen=_BISECTOR_KEEP_LAST)  # the newest records stay\n"
                "log.addHandler(RECENT)\n\n\nclass Encoder:\n    def forward(self, x):\n"
                "        log.debug('out %s', x)\n        return x\n",
            ),
        ),
        Example(
            "a MemoryHandler on self with a target and a capacity it never reaches",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Net",
                sources={
                    "m.py": (
                        "import logging\nfrom logging.handlers import MemoryHandler\n\n\nclass Net:\n"
                        "    def __init__(self, sink):\n"
                        "        self.records = MemoryHandler(10_000_000, logging.ERROR, sink)\n"
                        "        logging.getLogger('net').addHandler(self.records)\n\n"
                        "    def forward(self, x):\n        logging.getLogger('net').info('x %s', x)\n"
                        "        return x\n"
                    )
                },
            ),
            True,
            "the target still gets every record",
            edited=(
                "import logging\nfrom logging.handlers import MemoryHandler\n\n\n"
                "_BISECTOR_KEEP_LAST = 4  # items each bounded container keeps; the oldest go first\n"
                "class Net:\n"
                "    def __init__(self, sink):\n"
                "        self.records = MemoryHandler(_BISECTOR_KEEP_LAST, logging.ERROR, sink)\n"
                "        logging.getLogger('net').addHandler(self.records)\n\n"
                "    def forward(self, x):\n        logging.getLogger('net').info('x %s', x)\n        return x\n",
            ),
        ),
        Example(
            "a local MemoryHandler with its default capacity and no target",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Net",
                sources={
                    "m.py": (
                        "import logging.handlers\n\n\ndef setup(log):\n"
                        "    keep = logging.handlers.MemoryHandler(100)\n    log.addHandler(keep)\n    return keep\n"
                    )
                },
            ),
            True,
            "keep.buffer = collections.deque",
            edited=(
                "import collections\nimport logging.handlers\n\n\n"
                "_BISECTOR_KEEP_LAST = 4  # items each bounded container keeps; the oldest go first\n"
                "def setup(log):\n"
                "    keep = logging.handlers.MemoryHandler(100)\n"
                "    keep.buffer = collections.deque(maxlen=_BISECTOR_KEEP_LAST)  # the newest records stay\n"
                "    log.addHandler(keep)\n    return keep\n",
            ),
        ),
        Example(
            "a MemoryHandler that flushes to a target at a small capacity",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Net",
                sources={
                    "m.py": (
                        "import logging\nimport logging.handlers\n\n"
                        "H = logging.handlers.MemoryHandler(400, target=logging.StreamHandler())\n"
                    )
                },
            ),
            False,
        ),
        Example(
            "a MemoryHandler given its target later",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Net",
                sources={
                    "m.py": (
                        "import logging\nimport logging.handlers\n\nH = logging.handlers.MemoryHandler(400)\n"
                        "H.setTarget(logging.StreamHandler())\n"
                    )
                },
            ),
            False,
        ),
    )


def _names(path: Mapping[str, object], site: Site) -> bool:
    """Does a retention path name this handler? A global's (`mod.RECENT.buffer`) or an
    attribute's (`net.records.buffer`) by its name; a logger's (`logging:net.handlers[0].buffer`)
    names no variable: every such handler may be it."""
    p = str(path.get("path", ""))
    if p.startswith("logging:"):
        return True
    parts = p.split(".")
    return len(parts) >= 2 and parts[-2] == site.name.rsplit(".", 1)[-1]


def _constant(node: cst.BaseExpression) -> int | None:
    """The value of an integer written with literals and + - * ** (`10**9`, `1_000_000`), else None."""
    code = cst.Module(body=[]).code_for_node(node)
    try:
        tree = ast.parse(code, mode="eval").body
    except SyntaxError:
        return None

    def value(n: ast.AST) -> int | None:
        if isinstance(n, ast.Constant) and isinstance(n.value, int) and not isinstance(n.value, bool):
            return n.value
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Sub, ast.Mult, ast.Pow)):
            a, b = value(n.left), value(n.right)
            if a is None or b is None:
                return None
            if isinstance(n.op, ast.Pow):
                return a**b if 0 <= b <= 64 else None
            return a + b if isinstance(n.op, ast.Add) else a - b if isinstance(n.op, ast.Sub) else a * b
        return None

    return value(tree)


def _handler_call(node: cst.BaseExpression) -> tuple[str, cst.Call] | None:
    if isinstance(node, cst.Call):
        kind = _cst.dotted(node.func).rsplit(".", 1)[-1]
        if kind in HANDLERS:
            return kind, node
    return None


def _arg(call: cst.Call, kind: str, name: str) -> cst.Arg | None:
    """The argument passed for a parameter of the handler's constructor, by keyword or position."""
    for a in call.args:
        if a.keyword is not None and a.keyword.value == name:
            return a
    pos = [a for a in call.args if a.keyword is None and not a.star]
    at = HANDLERS[kind].index(name) if name in HANDLERS[kind] else -1
    return pos[at] if 0 <= at < len(pos) else None


def unbounded_handlers(source: str) -> list[Site]:
    """Handlers created in an assignment that keep every record: a MemoryHandler with no target
    (none passed, None, and no `.setTarget(` on it in the file), or any buffering handler whose
    capacity is at least HUGE."""
    module = _cst.parse(source)
    if module is None:
        return []
    out: list[Site] = []

    class V(cst.CSTVisitor):
        METADATA_DEPENDENCIES = (PositionProvider,)

        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []

        def visit_ClassDef(self, node: cst.ClassDef) -> None:
            self.stack.append(node.name.value)

        def leave_ClassDef(self, node: cst.ClassDef) -> None:
            self.stack.pop()

        def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
            self.stack.append(node.name.value)

        def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
            self.stack.pop()

        def visit_Assign(self, node: cst.Assign) -> None:
            found = _handler_call(node.value)
            name = _cst.dotted(node.targets[0].target) if len(node.targets) == 1 else ""
            if found is None or not name:
                return
            kind, call = found
            capacity = _arg(call, kind, "capacity")
            huge = capacity is not None and (_constant(capacity.value) or 0) >= HUGE
            given = _arg(call, kind, "target")
            has_target = kind == "MemoryHandler" and (
                (given is not None and _cst.dotted(given.value) != "None") or f"{name}.setTarget(" in source
            )
            if kind == "MemoryHandler" and not has_target or huge:
                line = self.get_metadata(PositionProvider, node).start.line
                out.append(Site(name, line, ".".join(self.stack), has_target))

    cst.MetadataWrapper(module).visit(V())
    return out


def bound_handler(source: str, site: Site) -> str | None:
    """The handler bounded where it is created (see the module's docstring), the bound named
    beside it; None when the statement is not found again."""
    module = _cst.parse(source)
    if module is None:
        return None
    wrapper = cst.MetadataWrapper(module)
    done = 0

    class T(cst.CSTTransformer):
        METADATA_DEPENDENCIES = (PositionProvider,)

        def leave_SimpleStatementLine(self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine):
            nonlocal done
            if self.get_metadata(PositionProvider, o).start.line != site.line or len(u.body) != 1:
                return u
            stmt = u.body[0]
            found = _handler_call(stmt.value) if isinstance(stmt, cst.Assign) else None
            if found is None:
                return u
            done += 1
            if not site.has_target:
                keep = cst.parse_statement(
                    f"{site.name}.buffer = collections.deque(maxlen={KEEP_NAME})  # the newest records stay\n"
                )
                return cst.FlattenSentinel([u, keep])
            kind, call = found
            capacity = _arg(call, kind, "capacity")
            if capacity is None:
                return u
            args = [a.with_changes(value=cst.Name(KEEP_NAME)) if a is capacity else a for a in call.args]
            return u.with_changes(body=[stmt.with_changes(value=call.with_changes(args=args))])

    after = wrapper.visit(T()).code
    if not done or after == source:
        return None
    after = with_bound(after, KEEP_NAME, KEEP_LAST, KEEP_WHY, site.line)
    return after if site.has_target else _cst.ensure_import(after, "import collections")


FIXER = BoundedLogRecords()
