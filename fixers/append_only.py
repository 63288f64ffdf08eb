"""A container that forward only ever adds to (``self.history.append(y)``, a module-level list
a wrapper fills), the most common Python-level leak: every call's result stays alive. Fixed as an
edit to the user's source (libcst, formatting kept), in the order tried:

- keep only the last few, trimmed after each append (the data stays readable, resets survive);
- the list made a ``collections.deque(maxlen=4)`` in ``__init__`` and every reset;
- stop adding to it (which empties what it keeps: never chosen unasked).

A container forward also reads is state, not a leak: left alone.
"""

from __future__ import annotations

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers._appended import readers_of, still_seen, trim_after_grow
from bisector.fixers._bounds import KEEP_LAST
from bisector.fixers.base import LEAK, PYTHON_LEAKS, Candidate, Example, FixTarget, SourceEdit


class AppendOnly:
    name = "append-only"
    family = PYTHON_LEAKS
    description = (
        "a container forward only appends to: keep its last few (trim or collections.deque), or stop appending"
    )
    stages = ("eager", "export")
    kinds = (LEAK,)

    def propose(self, target: FixTarget) -> list[Candidate]:
        return [
            c for site in _cst.region_classes(target.sources, target.region_class) for c in self._append_only(*site)
        ]

    def _append_only(self, path: str, source: str, module: cst.Module, cls: cst.ClassDef) -> list[Candidate]:
        fn = _cst.method(cls, "forward")
        assert fn is not None
        out = []
        name = cls.name.value
        for owner in _unread_grown(fn):
            readers = readers_of(module, owner, cls, exclude=(f"{name}.forward",))
            out += self._bounded(path, source, name, owner, readers)
            out += self._stopped(path, source, name, owner, readers)
        return out

    def _bounded(self, path: str, source: str, name: str, owner: str, readers: list[str]) -> list[Candidate]:
        """Bounding first: the data stays, only the oldest goes. A trim after each append survives
        the code's own resets (`self.stats = []` in pop_stats) and keeps the type; a deque
        bounds an attribute at its every binding."""
        out = []
        trimmed = trim_after_grow(source, owner, lambda where, n=name: where == f"{n}.forward")
        if trimmed is not None:
            seen = still_seen(readers)
            out.append(
                Candidate(
                    self.name,
                    f"{name}.forward: keep only the last {KEEP_LAST} in {owner} "
                    f"(the oldest dropped after each append{seen})",
                    edits=(SourceEdit(path, source, trimmed, f"trim {owner} to the last {KEEP_LAST}"),),
                    size=1,
                )
            )
        if owner.startswith("self."):
            bounded = _bound_init(source, name, owner[5:])
            if bounded is not None:
                out.append(
                    Candidate(
                        self.name,
                        f"{name}: keep only the last {KEEP_LAST} in {owner} "
                        f"(collections.deque(maxlen={KEEP_LAST}), resets too)",
                        edits=(SourceEdit(path, source, bounded, f"{owner} = collections.deque(maxlen={KEEP_LAST})"),),
                        size=2,
                    )
                )
        return out

    def _stopped(self, path: str, source: str, name: str, owner: str, readers: list[str]) -> list[Candidate]:
        """The appends removed: nothing is kept, and whoever reads the container sees nothing."""

        def pred(stmt: cst.BaseSmallStatement, where: str) -> bool:
            call = _cst.call_of(stmt)
            return where == f"{name}.forward" and call is not None and call[0] == owner and call[1] in _cst.GROW_METHODS

        after, removed = _cst.remove(source, pred)
        if not removed:
            return []
        return [
            Candidate(
                self.name,
                f"{name}.forward: stop adding to {owner}, which keeps every call's result alive",
                edits=(SourceEdit(path, source, after, f"remove {removed[0]}"),),
                size=len(removed),
                # What the container keeps is the point of appending to it, read here or not
                # (a public attribute, a module global: code elsewhere may read it).
                removes_behaviour=(
                    f"{owner} is read by {', '.join(readers)}, which would see nothing"
                    if readers
                    else f"{owner} would stay empty"
                ),
            )
        ]

    examples = (
        Example(
            "a list on the module that forward appends to",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Recorder",
                sources={
                    "m.py": (
                        "import torch\n\nclass Recorder(torch.nn.Module):\n    def __init__(self):\n"
                        "        super().__init__()\n        self.history = []\n\n"
                        "    def forward(self, x):\n        y = x * 2\n"
                        "        self.history.append(y)  # debugging\n        return y\n"
                    )
                },
            ),
            True,
            "self.history",
            edited=(
                (
                    "import torch\n"
                    "\n"
                    "class Recorder(torch.nn.Module):\n"
                    "    def __init__(self):\n"
                    "        super().__init__()\n"
                    "        self.history = []\n"
                    "\n"
                    "    def forward(self, x):\n"
                    "        y = x * 2\n"
                    "        self.history.append(y)  # debugging\n"
                    "        del self.history[:-4]  # keep only the latest 4\n"
                    "        return y\n"
                ),
                (
                    "import collections\n"
                    "import torch\n"
                    "\n"
                    "class Recorder(torch.nn.Module):\n"
                    "    def __init__(self):\n"
                    "        super().__init__()\n"
                    "        self.history = collections.deque(maxlen=4)\n"
                    "\n"
                    "    def forward(self, x):\n"
                    "        y = x * 2\n"
                    "        self.history.append(y)  # debugging\n"
                    "        return y\n"
                ),
                (
                    "import torch\n"
                    "\n"
                    "class Recorder(torch.nn.Module):\n"
                    "    def __init__(self):\n"
                    "        super().__init__()\n"
                    "        self.history = []\n"
                    "\n"
                    "    def forward(self, x):\n"
                    "        y = x * 2\n"
                    "        return y\n"
                ),
            ),
        ),
        Example(
            "a module-level list filled by a wrapper's forward",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Keep",
                sources={
                    "m.py": (
                        "KEPT = []\n\nclass Keep:\n    def forward(self, x):\n        y = self.inner(x)\n"
                        "        KEPT.append(y)\n        return y\n"
                    )
                },
            ),
            True,
            "KEPT",
            edited=(
                (
                    "KEPT = []\n"
                    "\n"
                    "class Keep:\n"
                    "    def forward(self, x):\n"
                    "        y = self.inner(x)\n"
                    "        KEPT.append(y)\n"
                    "        del KEPT[:-4]  # keep only the latest 4\n"
                    "        return y\n"
                ),
                ("KEPT = []\n\nclass Keep:\n    def forward(self, x):\n        y = self.inner(x)\n        return y\n"),
            ),
        ),
        Example(
            "a local list is freed when forward returns",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Local",
                sources={
                    "m.py": (
                        "class Local:\n    def forward(self, x):\n        parts = []\n        parts.append(x)\n"
                        "        return sum(parts)\n"
                    )
                },
            ),
            False,
        ),
        Example(
            "a list forward also reads is state, not a leak to delete",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Window",
                sources={
                    "m.py": (
                        "class Window:\n    def forward(self, x):\n        self.seen.append(x)\n"
                        "        return self.seen[-1]\n"
                    )
                },
            ),
            False,
        ),
        Example("native memory, no source to edit", FixTarget("eager", LEAK, region_type="m.C", sources={}), False),
        Example(
            "growth per new shape is not an append per call",
            FixTarget(
                "eager",
                "shape-growth",
                region_type="m.Keep",
                sources={"m.py": ("KEPT = []\n\nclass Keep:\n    def forward(self, x):\n        KEPT.append(x)\n")},
            ),
            False,
        ),
    )


def _bound_init(source: str, cls_name: str, attr: str) -> str | None:
    """`self.attr = []` (or `: list = []`) in __init__, and every reset of it to `[]` in the
    class's other methods, -> a bounded deque (a reset to a plain list would unbound it)."""
    module = _cst.parse(source)
    if module is None:
        return None
    replaced = False
    other = False

    class T(_cst.ScopedTransformer):
        def _value(self) -> cst.BaseExpression:
            return cst.parse_expression(f"collections.deque(maxlen={KEEP_LAST})")

        def _mine(self, target: cst.BaseExpression) -> bool:
            return len(self.stack) == 2 and self.stack[0] == cls_name and _cst.dotted(target) == f"self.{attr}"

        def leave_Assign(self, o: cst.Assign, u: cst.Assign) -> cst.Assign:
            nonlocal replaced, other
            if len(u.targets) == 1 and self._mine(u.targets[0].target):
                if isinstance(u.value, cst.List) and not u.value.elements:
                    replaced = replaced or self.stack[1] == "__init__"
                    return u.with_changes(value=self._value())
                other = True  # assigned something we cannot bound: no deque candidate
            return u

        def leave_AnnAssign(self, o: cst.AnnAssign, u: cst.AnnAssign) -> cst.AnnAssign | cst.Assign:
            nonlocal replaced
            if self._mine(u.target) and isinstance(u.value, cst.List) and not u.value.elements:
                replaced = replaced or self.stack[1] == "__init__"
                return cst.Assign(targets=[cst.AssignTarget(u.target)], value=self._value())
            return u

    new = module.visit(T()).code
    if not replaced or other:
        return None
    return _cst.ensure_import(new, "import collections")


FIXER = AppendOnly()


def _unread_grown(fn: cst.FunctionDef) -> list[str]:
    """The containers forward grows and never reads (a local list is freed when forward returns)."""
    local = _cst.local_names(fn)
    owners: list[str] = []
    for stmt in _cst.simple_statements(fn):
        call = _cst.call_of(stmt)
        if call and call[1] in _cst.GROW_METHODS:
            owner = call[0]
            root = owner.split(".")[0]
            if root in local and root != "self":
                continue  # a local list: freed when forward returns
            if _cst.reads_of(fn, owner) == 0 and owner not in owners:
                owners.append(owner)
    return owners
