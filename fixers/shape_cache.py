"""A cache forward fills per input shape and never evicts (``self.cache[key] = ...``): memory
grows with every new shape. The edit bounds it, evicting the oldest entry past a few."""

from __future__ import annotations

from typing import Union

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers.base import PYTHON_LEAKS, SHAPE_GROWTH, Candidate, Example, FixTarget, SourceEdit

CACHE_LEN = 4  # entries a bounded cache keeps; insertion order, so the oldest go first


class ShapeCache:
    name = "shape-cache"
    family = PYTHON_LEAKS
    description = "a cache forward fills per input shape: evict its oldest entry past a few"
    stages = ("eager", "export")
    kinds = (SHAPE_GROWTH,)

    def propose(self, target: FixTarget) -> list[Candidate]:
        return [c for site in _cst.region_classes(target.sources, target.region_class) for c in self._bound(*site)]

    def _bound(self, path: str, source: str, module: cst.Module, cls: cst.ClassDef) -> list[Candidate]:
        """`self.cache[key] = value` inside forward, with no eviction: evict the oldest past N."""
        fn = _cst.method(cls, "forward")
        assert fn is not None
        caches: list[str] = []
        for stmt in _cst.simple_statements(fn):
            owner = _stored_in(stmt)
            if owner.startswith("self.") and owner not in caches:
                caches.append(owner)
        out = []
        name = cls.name.value
        for owner in caches:
            evict = cst.parse_statement(
                f"if len({owner}) > {CACHE_LEN}:\n    {owner}.pop(next(iter({owner})))  # oldest first\n"
            )

            class T(_cst.ScopedTransformer):
                def __init__(self) -> None:
                    super().__init__()
                    self.done = 0

                def leave_SimpleStatementLine(
                    self, o: cst.SimpleStatementLine, u: cst.SimpleStatementLine
                ) -> Union[cst.SimpleStatementLine, cst.FlattenSentinel[cst.BaseStatement]]:
                    if self.stack != [name, "forward"]:
                        return u
                    for s in u.body:
                        if (
                            isinstance(s, cst.Assign)
                            and isinstance(s.targets[0].target, cst.Subscript)
                            and (_cst.dotted(s.targets[0].target.value) == owner)  # noqa: B023 - T runs in this iteration
                        ):
                            self.done += 1
                            return cst.FlattenSentinel([u, evict])  # noqa: B023 - T runs in this iteration
                    return u

            t = T()
            after = module.visit(t).code
            if t.done:
                out.append(
                    Candidate(
                        self.name,
                        f"{name}.forward: bound {owner} to {CACHE_LEN} entries (oldest evicted), "
                        "it kept one per input shape",
                        edits=(SourceEdit(path, source, after, f"evict from {owner} past {CACHE_LEN} entries"),),
                        size=2,
                    )
                )
        return out

    examples = (
        Example(
            "a cache keyed by shape",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Table",
                sources={
                    "m.py": (
                        "class Table:\n    def __init__(self):\n        self.cache = {}\n\n    def forward(self, x):\n"
                        "        key = tuple(x.shape)\n        if key not in self.cache:\n"
                        "            self.cache[key] = x.new_zeros(key)\n        return x + self.cache[key]\n"
                    )
                },
            ),
            True,
            "self.cache",
            edited=(
                (
                    "class Table:\n"
                    "    def __init__(self):\n"
                    "        self.cache = {}\n"
                    "\n"
                    "    def forward(self, x):\n"
                    "        key = tuple(x.shape)\n"
                    "        if key not in self.cache:\n"
                    "            self.cache[key] = x.new_zeros(key)\n"
                    "            if len(self.cache) > 4:\n"
                    "                self.cache.pop(next(iter(self.cache)))  # oldest first\n"
                    "        return x + self.cache[key]\n"
                ),
            ),
        ),
        Example(
            "a per-call leak is not growth per shape",
            FixTarget(
                "eager",
                "leak",
                region_type="m.Table",
                sources={
                    "m.py": (
                        "class Table:\n    def forward(self, x):\n        self.cache[len(self.cache)] = x\n"
                        "        return x\n"
                    )
                },
            ),
            False,
        ),
        Example(
            "the runtime's arena is not the model's code",
            FixTarget("inference", SHAPE_GROWTH, sources={"m.py": "x = 1\n"}),
            False,
        ),
        Example(
            "a dict local to forward is freed when it returns",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Table",
                sources={
                    "m.py": (
                        "class Table:\n    def forward(self, x):\n        seen = {}\n        seen[x.shape] = x\n"
                        "        return x\n"
                    )
                },
            ),
            False,
        ),
    )


def _stored_in(stmt: cst.BaseSmallStatement) -> str:
    """`X[key] = value` -> "X"; anything else -> ""."""
    if isinstance(stmt, cst.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0].target, cst.Subscript):
        return _cst.dotted(stmt.targets[0].target.value)
    return ""


FIXER = ShapeCache()
