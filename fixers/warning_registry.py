"""A warning whose message names the input (``warnings.warn(f"length {t} ...")``) in a region's
code: under the default action the warnings module remembers every distinct message it has shown
in the calling module's ``__warningregistry__``, one entry per input length, for good. The edit
keeps every warning as it is and bounds the registry: a small helper, next to the region's class,
starts the registry over past ``_BISECTOR_WARNINGS_KEEP`` entries, called right after each such
warning. A message seen before may then be shown once more; no warning is lost.

Only warnings attributed to the calling module (no ``stacklevel`` above 1) are edited: with a
higher stacklevel the entry lands in the caller's registry, which the helper does not hold."""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers._bounds import KEEP_LAST, constant_line
from bisector.fixers.base import PYTHON_LEAKS, SHAPE_GROWTH, Candidate, Example, FixTarget, SourceEdit
from libcst.metadata import PositionProvider

KEEP_NAME = "_BISECTOR_WARNINGS_KEEP"
KEEP_WHY = "distinct warning messages this module's registry remembers; past it, it starts over"
HELPER = "_bisector_bound_warning_registry"
HELPER_CODE = f"""def {HELPER}():
    # The warnings module keeps one entry per distinct message shown from this module, so a message
    # naming the input grows it for good; starting over may show a warning once more.
    registry = globals().get("__warningregistry__")
    if registry is not None and len(registry) > {KEEP_NAME}:
        registry.clear()
"""


@dataclass(frozen=True)
class Site:
    """A statement `warnings.warn(<message built from values>)` in the region's class."""

    line: int  # the statement's last line (1-based): the helper's call goes after it
    indent: str
    cls_line: int  # the class's first line: the helper goes before the class


def _is_warn(func: cst.BaseExpression, bare_warn: bool) -> bool:
    return _cst.dotted(func) == "warnings.warn" or (bare_warn and _cst.dotted(func) == "warn")


def _varies(message: cst.BaseExpression) -> bool:
    """A message built from values (an f-string with fields, .format, %, +); a literal does not."""
    if isinstance(message, cst.SimpleString):
        return False
    if isinstance(message, cst.FormattedString):
        return any(isinstance(p, cst.FormattedStringExpression) for p in message.parts)
    if isinstance(message, cst.ConcatenatedString):
        return _varies(message.left) or _varies(message.right)
    return True


def _own_module(call: cst.Call) -> bool:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == "stacklevel":
            return isinstance(arg.value, cst.Integer) and arg.value.value == "1"
    return len(call.args) < 3  # stacklevel as the third positional argument


def sites(source: str, class_name: str) -> list[Site]:
    module = _cst.parse(source)
    if module is None or HELPER in source:
        return []
    bare_warn = "from warnings import" in source and "warn" in source
    wrapper = cst.MetadataWrapper(module)
    pos = wrapper.resolve(PositionProvider)
    lines = source.splitlines()
    found: list[Site] = []

    class V(cst.CSTVisitor):
        def __init__(self) -> None:
            self.cls: list[cst.ClassDef] = []

        def visit_ClassDef(self, node: cst.ClassDef) -> None:
            self.cls.append(node)

        def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
            self.cls.pop()

        def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
            if not self.cls or self.cls[-1].name.value != class_name or len(node.body) != 1:
                return
            stmt = node.body[0]
            call = stmt.value if isinstance(stmt, cst.Expr) else None
            if not isinstance(call, cst.Call) or not _is_warn(call.func, bare_warn) or not call.args:
                return
            if not _varies(call.args[0].value) or not _own_module(call):
                return
            start, end = pos[node].start.line, pos[node].end.line
            text = lines[start - 1]
            found.append(Site(end, text[: len(text) - len(text.lstrip())], pos[self.cls[-1]].start.line))

    wrapper.visit(V())
    return found


def bound_registry(source: str, found: list[Site]) -> str:
    """The helper's call after each site, and the bound and the helper just above the class."""
    lines = source.splitlines(keepends=True)
    for s in sorted(found, key=lambda s: -s.line):
        lines.insert(s.line, f"{s.indent}{HELPER}()\n")
    const = constant_line(source, KEEP_NAME, KEEP_LAST, KEEP_WHY)
    lines.insert(min(s.cls_line for s in found) - 1, (f"{const}\n\n" if const else "") + HELPER_CODE + "\n\n")
    return "".join(lines)


class BoundedWarningRegistry:
    name = "bounded-warning-registry"
    family = PYTHON_LEAKS
    description = "a warning whose message names the input: bound the module's warning registry"
    stages = ("eager", "export")
    kinds = (SHAPE_GROWTH,)

    def propose(self, target: FixTarget) -> list[Candidate]:
        if not target.region_class:
            return []
        out = []
        for path, source in target.sources.items():
            found = sites(source, target.region_class)
            if not found:
                continue
            after = bound_registry(source, found)
            out.append(
                Candidate(
                    self.name,
                    f"{target.region_class}: bound this module's warning registry to {KEEP_LAST} messages "
                    f"({KEEP_NAME} = {KEEP_LAST}); every warning is still issued, one whose message names the "
                    "input no longer adds a registry entry for good",
                    edits=(SourceEdit(path, source, after, f"{target.region_class}: bound its module's warnings"),),
                    size=2 + len(found),
                    bound=KEEP_LAST + 1,
                )
            )
        return out

    examples = (
        Example(
            "an f-string warning naming the length in forward",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Pad",
                sources={
                    "m.py": (
                        "import warnings\n\n\nclass Pad:\n    def forward(self, x):\n"
                        "        if x.shape[1] % 8:\n"
                        "            warnings.warn(f'length {x.shape[1]} is padded')\n"
                        "        return x\n"
                    )
                },
            ),
            True,
            "bound this module's warning registry",
            edited=(
                "import warnings\n\n\n"
                f"{KEEP_NAME} = 4  # {KEEP_WHY}\n"
                f"\n\ndef {HELPER}():\n"
                "    # The warnings module keeps one entry per distinct message shown from this module, so a message\n"
                "    # naming the input grows it for good; starting over may show a warning once more.\n"
                '    registry = globals().get("__warningregistry__")\n'
                f"    if registry is not None and len(registry) > {KEEP_NAME}:\n"
                "        registry.clear()\n\n\n"
                "class Pad:\n    def forward(self, x):\n"
                "        if x.shape[1] % 8:\n"
                "            warnings.warn(f'length {x.shape[1]} is padded')\n"
                f"            {HELPER}()\n"
                "        return x\n",
            ),
        ),
        Example(
            "a constant message: one registry entry, bounded already",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Pad",
                sources={
                    "m.py": "import warnings\n\n\nclass Pad:\n    def forward(self, x):\n"
                    "        warnings.warn('padded')\n"
                },
            ),
            False,
        ),
        Example(
            "a warning attributed to the caller (stacklevel=2)",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Pad",
                sources={
                    "m.py": (
                        "import warnings\n\n\nclass Pad:\n    def forward(self, x):\n"
                        "        warnings.warn(f'length {len(x)}', stacklevel=2)\n"
                    )
                },
            ),
            False,
        ),
    )


FIXER = BoundedWarningRegistry()
