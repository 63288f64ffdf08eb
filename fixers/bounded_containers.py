"""A list or deque that only grows, wherever it lives: on ``self`` (``self.recent = deque()`` with
no ``maxlen``), on a class (``registry = []`` in its body), at module level, filled in forward or
in a helper it calls. The edits keep its last few items, a named constant next to its definition:

- a deque gets ``maxlen`` at its definition and at every reset (``self.recent = deque()`` in
  ``reset()``): appends drop the oldest, readers (``summary()``) still see the latest;
- a list is trimmed after each append (``del X[:-_BISECTOR_KEEP_LAST]``): it stays a list, so
  slicing readers and the code's own resets keep working.

Lists that forward itself appends to on ``self`` or at module level are append-only's."""

from __future__ import annotations

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers._appended import readers_of, still_seen
from bisector.fixers._bounds import KEEP_LAST, KEEP_NAME, KEEP_WHY, rebind, trim_grows, trim_item_grows, with_bound
from bisector.fixers._closures import closures
from bisector.fixers._containers import Container, Use, pick, retained
from bisector.fixers.base import LEAK, PYTHON_LEAKS, Candidate, Example, FixTarget, SourceEdit


class BoundedContainers:
    name = "bounded-containers"
    family = PYTHON_LEAKS
    description = "a deque without maxlen or a class-level/module-level list that only grows: keep its last few"
    stages = ("eager", "export")
    kinds = (LEAK,)

    def propose(self, target: FixTarget) -> list[Candidate]:
        region = target.region_class

        def grown(uses: list[Use], reach: set[str]) -> bool:
            # A dict (or defaultdict) of lists grows its items: `_METRICS[name].append(v)`.
            grow, evict = ("grow-item", "evict-item") if any(u.what == "grow-item" for u in uses) else ("grow", "evict")
            grows = [u for u in uses if u.what == grow and u.where in reach]
            return bool(grows) and not any(u.what == evict for u in uses)

        out = []
        for source, c, uses in pick(
            target.sources, region, target.figures, ("list", "deque", *DICTS), ("list", "deque"), grown
        ):
            if c.kind in DICTS:
                out += self._items(source, c, uses)
                continue
            if c.kind == "list" and _append_only_covers(c, uses, region):
                continue
            module = _cst.parse(source)
            growers = {f"{u.where}()" for u in uses if u.what == "grow"}
            found = readers_of(module, _owner(c), _class(module, c.cls)) if module is not None else []
            readers = [r for r in found if r not in growers]
            after = bound_deque(source, c) if c.kind == "deque" else bound_list(source, c)
            if after is None:
                continue
            how = (
                f"collections.deque maxlen={KEEP_NAME} at its definition and every reset"
                if c.kind == "deque"
                else f"the oldest dropped after each append, {KEEP_NAME}"
            )
            out.append(
                Candidate(
                    self.name,
                    f"keep only the last {KEEP_LAST} in {c.label} ({how}){still_seen(readers)}",
                    edits=(SourceEdit(c.path, source, after, f"bound {c.label} to the last {KEEP_LAST}"),),
                    size=2,
                    bound=KEEP_LAST,
                )
            )
        return out + self._closures(target)

    def _items(self, source: str, c: Container, uses: list[Use]) -> list[Candidate]:
        """A dict whose values are lists that only grow (`_METRICS[name].append(v)` on a
        defaultdict(list)): each list trimmed after each append, so every key keeps its latest."""
        if not any(u.what == "grow-item" for u in uses):
            return []
        after = trim_item_grows(source, c, KEEP_NAME)
        if after is None:
            return []
        after = with_bound(after, KEEP_NAME, KEEP_LAST, KEEP_WHY, c.line)
        module = _cst.parse(source)
        growers = {f"{u.where}()" for u in uses if u.what == "grow-item"}
        found = readers_of(module, _owner(c), _class(module, c.cls)) if module is not None else []
        readers = [r for r in found if r not in growers]
        return [
            Candidate(
                self.name,
                f"keep only the last {KEEP_LAST} in each list of {c.label} (the oldest dropped after each "
                f"append, {KEEP_NAME}){still_seen(readers)}",
                edits=(SourceEdit(c.path, source, after, f"bound each list in {c.label} to the last {KEEP_LAST}"),),
                size=2,
                bound=KEEP_LAST,
            )
        ]

    def _closures(self, target: FixTarget) -> list[Candidate]:
        """A list kept in a closure cell, grown by the nested function (a hook made by a factory,
        `make_recorder(store)`): trimmed after each append inside it. The one a retention path
        names (root "closure"), else those the source shows outliving the call and holding a list."""
        paths = retained(target.figures, ("list",))
        named = {
            (str(p.get("attr", "")), str(p.get("qualname", "")).replace("<locals>.", ""))
            for p in paths
            if p.get("root") == "closure"
        }
        out = []
        for path, source in target.sources.items():
            for c, evident in closures(path, source):
                if not ((c.name, c.func) in named if paths else evident):
                    continue
                after = trim_grows(source, c, KEEP_NAME)
                if after is None:
                    continue
                after = with_bound(after, KEEP_NAME, KEEP_LAST, KEEP_WHY, c.line)
                out.append(
                    Candidate(
                        self.name,
                        f"keep only the last {KEEP_LAST} in {c.label} (the oldest dropped after each append "
                        f"there, {KEEP_NAME}): whoever holds the list still sees the latest",
                        edits=(SourceEdit(path, source, after, f"bound {c.name} in {c.func} to the last {KEEP_LAST}"),),
                        size=2,
                        bound=KEEP_LAST,
                    )
                )
        return out

    examples = (
        Example(
            "a deque without maxlen on self, reset in another method, read by summary()",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Meter",
                sources={
                    "m.py": (
                        "from collections import deque\n\nimport torch\n\n\nclass Meter(torch.nn.Module):\n"
                        "    def __init__(self):\n        super().__init__()\n        self.recent = deque()\n\n"
                        "    def forward(self, x):\n        self.recent.append(x.mean().item())\n        return x\n\n"
                        "    def reset(self):\n        self.recent = deque()\n\n"
                        "    def summary(self):\n        return sum(self.recent) / max(1, len(self.recent))\n"
                    )
                },
            ),
            True,
            "summary",
            edited=(
                "from collections import deque\n\nimport torch\n\n\n"
                "_BISECTOR_KEEP_LAST = 4  # items each bounded container keeps; the oldest go first\n"
                "class Meter(torch.nn.Module):\n"
                "    def __init__(self):\n        super().__init__()\n"
                "        self.recent = deque(maxlen=_BISECTOR_KEEP_LAST)\n\n"
                "    def forward(self, x):\n        self.recent.append(x.mean().item())\n        return x\n\n"
                "    def reset(self):\n        self.recent = deque(maxlen=_BISECTOR_KEEP_LAST)\n\n"
                "    def summary(self):\n        return sum(self.recent) / max(1, len(self.recent))\n",
            ),
        ),
        Example(
            "a module-level deque filled from a helper forward calls",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Head",
                sources={
                    "m.py": (
                        "import collections\n\nLAST = collections.deque()\n\n\ndef remember(y):\n"
                        "    LAST.append(y)\n\n\nclass Head:\n    def forward(self, x):\n        remember(x)\n"
                        "        return x\n"
                    )
                },
            ),
            True,
            "LAST",
            edited=(
                "import collections\n\n"
                "_BISECTOR_KEEP_LAST = 4  # items each bounded container keeps; the oldest go first\n"
                "LAST = collections.deque(maxlen=_BISECTOR_KEEP_LAST)\n\n\ndef remember(y):\n"
                "    LAST.append(y)\n\n\nclass Head:\n    def forward(self, x):\n        remember(x)\n"
                "        return x\n",
            ),
        ),
        Example(
            "a class-level list every instance appends to",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Layer",
                sources={
                    "m.py": (
                        "class Layer:\n    outputs = []\n\n    def forward(self, x):\n"
                        "        Layer.outputs.append(x)\n        return x\n\n"
                        "    def last(self):\n        return self.outputs[-2:]\n"
                    )
                },
            ),
            True,
            "Layer.outputs",
            edited=(
                "_BISECTOR_KEEP_LAST = 4  # items each bounded container keeps; the oldest go first\n"
                "class Layer:\n    outputs = []\n\n    def forward(self, x):\n"
                "        Layer.outputs.append(x)\n"
                "        del Layer.outputs[:-_BISECTOR_KEEP_LAST]  # keep only the latest _BISECTOR_KEEP_LAST\n"
                "        return x\n\n"
                "    def last(self):\n        return self.outputs[-2:]\n",
            ),
        ),
        Example(
            "a list on self filled in a helper method forward calls",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Enc",
                sources={
                    "m.py": (
                        "class Enc:\n    def __init__(self):\n        self.trace = []\n\n"
                        "    def _log(self, y):\n        self.trace.append(y)\n\n"
                        "    def forward(self, x):\n        self._log(x)\n        return x\n"
                    )
                },
            ),
            True,
            "self.trace",
            edited=(
                "_BISECTOR_KEEP_LAST = 4  # items each bounded container keeps; the oldest go first\n"
                "class Enc:\n    def __init__(self):\n        self.trace = []\n\n"
                "    def _log(self, y):\n        self.trace.append(y)\n"
                "        del self.trace[:-_BISECTOR_KEEP_LAST]  # keep only the latest _BISECTOR_KEEP_LAST\n\n"
                "    def forward(self, x):\n        self._log(x)\n        return x\n",
            ),
        ),
        Example(
            "a hook made by a factory whose closure keeps the list it is given",
            FixTarget(
                "eager",
                LEAK,
                region_type="torch.nn.modules.linear.Linear",
                sources={
                    "m.py": (
                        "def make_recorder(store):\n    def record(module, args, output):\n"
                        "        store.append(output)\n\n    return record\n\n\n"
                        "class Net:\n    def __init__(self, layer):\n"
                        "        layer.register_forward_hook(make_recorder([]))\n"
                    )
                },
            ),
            True,
            "store in the closure of make_recorder.record",
            edited=(
                "_BISECTOR_KEEP_LAST = 4  # items each bounded container keeps; the oldest go first\n"
                "def make_recorder(store):\n    def record(module, args, output):\n"
                "        store.append(output)\n"
                "        del store[:-_BISECTOR_KEEP_LAST]  # keep only the latest _BISECTOR_KEEP_LAST\n\n"
                "    return record\n\n\n"
                "class Net:\n    def __init__(self, layer):\n"
                "        layer.register_forward_hook(make_recorder([]))\n",
            ),
        ),
        Example(
            "a method that registers a nested hook filling a local list it returns",
            FixTarget(
                "eager",
                LEAK,
                region_type="torch.nn.modules.linear.Linear",
                sources={
                    "m.py": (
                        "class Net:\n    def __init__(self, layer):\n        self.layer = layer\n\n"
                        "    def watch(self):\n        seen = []\n\n        def hook(module, args, output):\n"
                        "            seen.append(output.mean())\n\n"
                        "        self.layer.register_forward_hook(hook)\n        return seen\n"
                    )
                },
            ),
            True,
            "Net.watch.hook",
            edited=(
                "_BISECTOR_KEEP_LAST = 4  # items each bounded container keeps; the oldest go first\n"
                "class Net:\n    def __init__(self, layer):\n        self.layer = layer\n\n"
                "    def watch(self):\n        seen = []\n\n        def hook(module, args, output):\n"
                "            seen.append(output.mean())\n"
                "            del seen[:-_BISECTOR_KEEP_LAST]  # keep only the latest _BISECTOR_KEEP_LAST\n\n"
                "        self.layer.register_forward_hook(hook)\n        return seen\n",
            ),
        ),
        Example(
            "a module-level defaultdict(list) of metrics filled by a helper forward calls",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Block",
                sources={
                    "m.py": (
                        "import collections\n\nSTATS = collections.defaultdict(list)\n\n\n"
                        "def log_metric(name, value):\n    STATS[name].append(value)\n\n\n"
                        "class Block:\n    def forward(self, x):\n        log_metric('act', x.mean())\n"
                        "        return x\n\n\ndef report():\n"
                        "    return {k: sum(v) / len(v) for k, v in STATS.items()}\n"
                    )
                },
            ),
            True,
            "report() still sees them",
            edited=(
                "import collections\n\n"
                "_BISECTOR_KEEP_LAST = 4  # items each bounded container keeps; the oldest go first\n"
                "STATS = collections.defaultdict(list)\n\n\n"
                "def log_metric(name, value):\n    STATS[name].append(value)\n"
                "    del STATS[name][:-_BISECTOR_KEEP_LAST]  # keep only the latest _BISECTOR_KEEP_LAST\n\n\n"
                "class Block:\n    def forward(self, x):\n        log_metric('act', x.mean())\n"
                "        return x\n\n\ndef report():\n"
                "    return {k: sum(v) / len(v) for k, v in STATS.items()}\n",
            ),
        ),
        Example(
            "a dict of lists on self grown through setdefault",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Block",
                sources={
                    "m.py": (
                        "class Block:\n    def __init__(self):\n        self.stats = {}\n\n"
                        "    def forward(self, x):\n        self.stats.setdefault(x.dtype, []).append(x.sum())\n"
                        "        return x\n\n    def totals(self):\n"
                        "        return {k: sum(v) for k, v in self.stats.items()}\n"
                    )
                },
            ),
            True,
            "Block.totals() still sees them",
            edited=(
                "_BISECTOR_KEEP_LAST = 4  # items each bounded container keeps; the oldest go first\n"
                "class Block:\n    def __init__(self):\n        self.stats = {}\n\n"
                "    def forward(self, x):\n        self.stats.setdefault(x.dtype, []).append(x.sum())\n"
                "        del self.stats[x.dtype][:-_BISECTOR_KEEP_LAST]  # keep only the latest _BISECTOR_KEEP_LAST\n"
                "        return x\n\n    def totals(self):\n"
                "        return {k: sum(v) for k, v in self.stats.items()}\n",
            ),
        ),
        Example(
            "a nested function's list that dies with the call",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Net",
                sources={
                    "m.py": (
                        "class Net:\n    def forward(self, x):\n        out = []\n\n"
                        "        def keep(y):\n            out.append(y)\n\n        keep(x)\n        return out\n"
                    )
                },
            ),
            False,
        ),
        Example(
            "a dict of lists keyed by a call (the key would run twice)",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Block",
                sources={
                    "m.py": (
                        "import collections\n\nSTATS = collections.defaultdict(list)\n\n\n"
                        "class Block:\n    def forward(self, x):\n        STATS[x.name()].append(x)\n        return x\n"
                    )
                },
            ),
            False,
        ),
        Example(
            "a deque that already has a maxlen",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Meter",
                sources={
                    "m.py": (
                        "from collections import deque\n\n\nclass Meter:\n    def __init__(self):\n"
                        "        self.recent = deque(maxlen=16)\n\n    def forward(self, x):\n"
                        "        self.recent.append(x)\n        return x\n"
                    )
                },
            ),
            False,
        ),
        Example(
            "a queue forward also drains",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Q",
                sources={
                    "m.py": (
                        "from collections import deque\n\nQ = deque()\n\n\nclass Q:\n    def forward(self, x):\n"
                        "        Q.append(x)\n        return Q.popleft()\n"
                    )
                },
            ),
            False,
        ),
        Example(
            "a list forward appends to on self is append-only's",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.R",
                sources={
                    "m.py": (
                        "class R:\n    def __init__(self):\n        self.h = []\n\n    def forward(self, x):\n"
                        "        self.h.append(x)\n        return x\n"
                    )
                },
            ),
            False,
        ),
    )


DICTS = ("dict", "OrderedDict", "defaultdict")


def _append_only_covers(c: Container, uses: list[Use], region: str) -> bool:
    """append-only already bounds a list on self or at module level that forward itself grows."""
    return c.scope in ("self", "module") and all(u.where == f"{region}.forward" for u in uses if u.what == "grow")


def _owner(c: Container) -> str:
    return f"self.{c.name}" if c.scope in ("self", "class") else c.name


def _class(module: cst.Module | None, name: str) -> cst.ClassDef | None:
    if module is None or not name:
        return None
    return next((k for k in _cst.classes(module) if k.name.value == name), None)


_EQ = cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace(""))


def bound_deque(source: str, c: Container) -> str | None:
    """maxlen=KEEP_NAME on every binding of deque c (a binding to anything else: None)."""

    def maxlen(old: cst.BaseExpression) -> cst.BaseExpression | None:
        if not (isinstance(old, cst.Call) and _cst.dotted(old.func) in ("deque", "collections.deque")):
            return None
        if len(old.args) > 1 or any(a.keyword is not None and a.keyword.value == "maxlen" for a in old.args):
            return old
        return old.with_changes(args=[*old.args, cst.Arg(cst.Name(KEEP_NAME), keyword=cst.Name("maxlen"), equal=_EQ)])

    after, n = rebind(source, c, maxlen)
    if n <= 0:
        return None
    return with_bound(after, KEEP_NAME, KEEP_LAST, KEEP_WHY, c.line)


def bound_list(source: str, c: Container) -> str | None:
    after = trim_grows(source, c, KEEP_NAME)
    if after is None:
        return None
    return with_bound(after, KEEP_NAME, KEEP_LAST, KEEP_WHY, c.line)


FIXER = BoundedContainers()
