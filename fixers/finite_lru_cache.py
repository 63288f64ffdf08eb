"""A function memoised without a bound (``@functools.lru_cache(maxsize=None)``, ``@lru_cache(None)``,
``@functools.cache``) that the region's code calls with ever new arguments (a causal mask per
sequence length): its cache keeps every result. The edit gives it a finite ``maxsize``, a named
constant next to it; hits keep working, the least recently used result goes first."""

from __future__ import annotations

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers._bounds import MEMO_MAX, MEMO_NAME, with_bound
from bisector.fixers._containers import reachable, retained
from bisector.fixers.base import LEAK, PYTHON_LEAKS, SHAPE_GROWTH, Candidate, Example, FixTarget, SourceEdit
from libcst.metadata import PositionProvider


class FiniteLruCache:
    name = "finite-lru-cache"
    family = PYTHON_LEAKS
    description = "an lru_cache(maxsize=None) or functools.cache the region calls: a finite maxsize"
    stages = ("eager", "export")
    kinds = (SHAPE_GROWTH, LEAK)

    def propose(self, target: FixTarget) -> list[Candidate]:
        named = {str(p.get("qualname", "")).rsplit(".", 1)[-1] for p in retained(target.figures, ("lru_cache",))}
        reach = {w.rsplit(".", 1)[-1] for w in reachable(target.sources, target.region_class)}
        out = []
        for path, source in target.sources.items():
            for fn, line in _unbounded(source):
                if fn not in (named or reach):
                    continue
                after = bound(source, fn, line)
                if after is None:
                    continue
                out.append(
                    Candidate(
                        self.name,
                        f"{fn}: lru_cache with maxsize={MEMO_NAME} ({MEMO_MAX}) instead of no bound: it kept one "
                        f"result per new argument; the {MEMO_MAX} most recently used still hit",
                        edits=(SourceEdit(path, source, after, f"{fn}: maxsize={MEMO_NAME}"),),
                        size=2,
                        bound=MEMO_MAX,
                    )
                )
        return out

    examples = (
        Example(
            "a causal mask memoised per length with lru_cache(maxsize=None)",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Attn",
                sources={
                    "m.py": (
                        "import functools\n\nimport torch\n\n\n@functools.lru_cache(maxsize=None)\n"
                        "def causal_mask(t):\n    return torch.ones(t, t).tril()\n\n\n"
                        "class Attn(torch.nn.Module):\n    def forward(self, x):\n"
                        "        return x * causal_mask(x.shape[-1])\n"
                    )
                },
            ),
            True,
            "maxsize=_BISECTOR_MEMO_MAX",
            edited=(
                "import functools\n\nimport torch\n\n\n"
                "_BISECTOR_MEMO_MAX = 8  # results each bounded cache keeps; the least recently used go first\n"
                "@functools.lru_cache(maxsize=_BISECTOR_MEMO_MAX)\n"
                "def causal_mask(t):\n    return torch.ones(t, t).tril()\n\n\n"
                "class Attn(torch.nn.Module):\n    def forward(self, x):\n"
                "        return x * causal_mask(x.shape[-1])\n",
            ),
        ),
        Example(
            "functools.cache on a helper, and lru_cache(None) on a method",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Rope",
                sources={
                    "m.py": (
                        "from functools import cache, lru_cache\n\n\n@cache\ndef angles(n):\n"
                        "    return list(range(n))\n\n\nclass Rope:\n    @lru_cache(None)\n"
                        "    def table(self, n):\n        return angles(n)\n\n"
                        "    def forward(self, x):\n        return self.table(len(x))\n"
                    )
                },
            ),
            True,
            "lru_cache",
            edited=(
                "import functools\nfrom functools import cache, lru_cache\n\n\n"
                "_BISECTOR_MEMO_MAX = 8  # results each bounded cache keeps; the least recently used go first\n"
                "@functools.lru_cache(maxsize=_BISECTOR_MEMO_MAX)\ndef angles(n):\n    return list(range(n))\n\n\n"
                "class Rope:\n    @lru_cache(None)\n    def table(self, n):\n        return angles(n)\n\n"
                "    def forward(self, x):\n        return self.table(len(x))\n",
                "from functools import cache, lru_cache\n\n\n@cache\ndef angles(n):\n    return list(range(n))\n\n\n"
                "_BISECTOR_MEMO_MAX = 8  # results each bounded cache keeps; the least recently used go first\n"
                "class Rope:\n    @lru_cache(_BISECTOR_MEMO_MAX)\n    def table(self, n):\n        return angles(n)\n\n"
                "    def forward(self, x):\n        return self.table(len(x))\n",
            ),
        ),
        Example(
            "lru_cache with its default maxsize is already bounded",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Attn",
                sources={
                    "m.py": (
                        "import functools\n\n\n@functools.lru_cache\ndef mask(t):\n    return t\n\n\n"
                        "class Attn:\n    def forward(self, x):\n        return mask(len(x))\n"
                    )
                },
            ),
            False,
        ),
        Example(
            "an unbounded cache the region never calls",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Attn",
                sources={
                    "m.py": (
                        "import functools\n\n\n@functools.cache\ndef vocab(path):\n    return open(path).read()\n\n\n"
                        "class Attn:\n    def forward(self, x):\n        return x\n"
                    )
                },
            ),
            False,
        ),
    )


UNBOUNDED = ("cache", "functools.cache")
LRU = ("lru_cache", "functools.lru_cache")


def _unbounded_decorator(d: cst.Decorator) -> bool:
    e = d.decorator
    if _cst.dotted(e) in UNBOUNDED:
        return True
    if isinstance(e, cst.Call) and _cst.dotted(e.func) in LRU:
        for a in e.args:
            if (a.keyword is None or a.keyword.value == "maxsize") and isinstance(a.value, cst.Name):
                return a.value.value == "None"
    return False


def _unbounded(source: str) -> list[tuple[str, int]]:
    """(function name, line) of every function or method decorated with an unbounded cache."""
    module = _cst.parse(source)
    if module is None:
        return []
    out: list[tuple[str, int]] = []

    class V(cst.CSTVisitor):
        METADATA_DEPENDENCIES = (PositionProvider,)

        def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
            if any(_unbounded_decorator(d) for d in node.decorators):
                out.append((node.name.value, self.get_metadata(PositionProvider, node).start.line))

    cst.MetadataWrapper(module).visit(V())
    return out


def bound(source: str, fn: str, line: int) -> str | None:
    """fn's unbounded cache decorator given maxsize=MEMO_NAME, the constant written before it."""
    module = _cst.parse(source)
    if module is None:
        return None
    done = 0

    class T(cst.CSTTransformer):
        def leave_FunctionDef(self, o: cst.FunctionDef, u: cst.FunctionDef) -> cst.FunctionDef:
            nonlocal done
            if u.name.value != fn:
                return u
            decorators = []
            for d in u.decorators:
                e = d.decorator
                if _unbounded_decorator(d):
                    done += 1
                    if isinstance(e, cst.Call):  # lru_cache(None) / lru_cache(maxsize=None): keep its form
                        args = [
                            a.with_changes(value=cst.Name(MEMO_NAME))
                            if a.keyword is None or a.keyword.value == "maxsize"
                            else a
                            for a in e.args
                        ]
                        d = d.with_changes(decorator=e.with_changes(args=args))
                    else:  # cache / functools.cache: its bounded form (functools imported if need be)
                        d = d.with_changes(decorator=cst.parse_expression(f"functools.lru_cache(maxsize={MEMO_NAME})"))
                decorators.append(d)
            return u.with_changes(decorators=decorators)

    after = module.visit(T()).code
    if not done:
        return None
    if f"functools.lru_cache(maxsize={MEMO_NAME})" in after:
        after = _cst.ensure_import(after, "import functools")
    why = "results each bounded cache keeps; the least recently used go first"
    return with_bound(after, MEMO_NAME, MEMO_MAX, why, line)


FIXER = FiniteLruCache()
