"""A memo that never evicts: a dict (or OrderedDict) filled with one entry per input shape or per
call, on ``self``, on a class, at module level (``_MEMO[t] = ...`` in a helper forward calls) or as
a mutable default argument (``def f(x, cache={})``). The edit bounds it where it is defined and at
every reset: a small LRU dict written into the user's file (``_BisectorLRU``, an OrderedDict that
moves a hit to the end and drops the least recently used past ``_BISECTOR_MEMO_MAX``), so ``in``,
``[key]`` and ``.get`` keep hitting and the code that fills it is unchanged."""

from __future__ import annotations

import libcst as cst
from bisector.fixers import _cst
from bisector.fixers._bounds import (
    KEEP_LAST,
    KEEP_NAME,
    KEEP_WHY,
    MEMO_MAX,
    MEMO_NAME,
    constant_line,
    rebind,
    with_block,
)
from bisector.fixers._containers import Container, pick
from bisector.fixers.base import LEAK, PYTHON_LEAKS, SHAPE_GROWTH, Candidate, Example, FixTarget, SourceEdit

HELPER = "_BisectorLRU"
HELPER_CODE = f'''class {HELPER}(collections.OrderedDict):
    """A dict that keeps its maxsize most recently used entries (bisector bounded a memo with it):
    `in`, `[key]` and `.get` work as on a dict, a hit counts as a use, the least recent goes first."""

    def __init__(self, *args, maxsize=None, **kwargs):
        self.maxsize = maxsize
        super().__init__(*args, **kwargs)

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while self.maxsize is not None and len(self) > self.maxsize:
            self.popitem(last=False)
'''


class BoundedMemo:
    name = "bounded-memo"
    family = PYTHON_LEAKS
    description = "a dict memo that never evicts (on self, a class, a module or a default argument): a bounded LRU"
    stages = ("eager", "export")
    kinds = (SHAPE_GROWTH, LEAK)

    def propose(self, target: FixTarget) -> list[Candidate]:
        def filled(uses, reach) -> bool:
            stores = [u for u in uses if u.what in ("store", "setdefault") and u.where in reach]
            return bool(stores) and not any(u.what == "evict" for u in uses)

        out = []
        for source, c, _ in pick(
            target.sources,
            target.region_class,
            target.figures,
            ("dict", "OrderedDict"),
            ("dict", "OrderedDict"),
            filled,
        ):
            # Keyed by shape, a memo hits again on every shape it keeps: MEMO_MAX shapes. Keyed by
            # something new on every call (a step counter, a hash of the input), it is a log of the
            # latest calls: it keeps as few as a bounded list, and the probe sees it stop growing.
            per_call = target.kind == LEAK
            name, keep, why = (KEEP_NAME, KEEP_LAST, KEEP_WHY) if per_call else (MEMO_NAME, MEMO_MAX, MEMO_WHY)
            after = bound_memo(source, c, name, keep, why)
            if after is None:
                continue
            per = "call (a new key every call)" if per_call else "input shape"
            out.append(
                Candidate(
                    self.name,
                    f"bound {c.label} to its {keep} most recently used entries ({name} = {keep}, "
                    f"a small LRU dict at its definition and every reset): it kept one entry per {per}; "
                    "`in`, [key] and .get still hit",
                    edits=(SourceEdit(c.path, source, after, f"{c.label} = {HELPER}(maxsize={name})"),),
                    size=2,
                    bound=keep,
                )
            )
        return out

    examples = (
        Example(
            "a module-level memo keyed by length, filled from a helper forward calls",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Attention",
                sources={
                    "m.py": (
                        "import torch\n\n_MEMO = {}\n\n\ndef causal_mask(t):\n    if t not in _MEMO:\n"
                        "        _MEMO[t] = torch.ones(t, t).tril()\n    return _MEMO[t]\n\n\n"
                        "class Attention(torch.nn.Module):\n    def forward(self, x):\n"
                        "        return x * causal_mask(x.shape[-1])\n"
                    )
                },
            ),
            True,
            "_MEMO",
            edited=(
                "import collections\n"
                "import torch\n\n"
                f"{HELPER_CODE}\n"
                "_BISECTOR_MEMO_MAX = 8  # entries each bounded memo keeps; the least recently used go first\n"
                "_MEMO = _BisectorLRU(maxsize=_BISECTOR_MEMO_MAX)\n\n\n"
                "def causal_mask(t):\n    if t not in _MEMO:\n"
                "        _MEMO[t] = torch.ones(t, t).tril()\n    return _MEMO[t]\n\n\n"
                "class Attention(torch.nn.Module):\n    def forward(self, x):\n"
                "        return x * causal_mask(x.shape[-1])\n",
            ),
        ),
        Example(
            "a per-size feature cache on self, reset in another method",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Block",
                sources={
                    "m.py": (
                        "class Block:\n    def __init__(self):\n        self.feats = {}\n\n"
                        "    def forward(self, x):\n        key = tuple(x.shape)\n"
                        "        if key not in self.feats:\n            self.feats[key] = x.new_zeros(key)\n"
                        "        return x + self.feats.get(key)\n\n"
                        "    def reset(self):\n        self.feats = {}\n"
                    )
                },
            ),
            True,
            "self.feats",
            edited=(
                "import collections\n"
                f"{HELPER_CODE}\n"
                "_BISECTOR_MEMO_MAX = 8  # entries each bounded memo keeps; the least recently used go first\n"
                "class Block:\n    def __init__(self):\n"
                "        self.feats = _BisectorLRU(maxsize=_BISECTOR_MEMO_MAX)\n\n"
                "    def forward(self, x):\n        key = tuple(x.shape)\n"
                "        if key not in self.feats:\n            self.feats[key] = x.new_zeros(key)\n"
                "        return x + self.feats.get(key)\n\n"
                "    def reset(self):\n        self.feats = _BisectorLRU(maxsize=_BISECTOR_MEMO_MAX)\n",
            ),
        ),
        Example(
            "a class-level OrderedDict registry filled per call",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Tracker",
                sources={
                    "m.py": (
                        "from collections import OrderedDict\n\n\nclass Tracker:\n    seen = OrderedDict()\n\n"
                        "    def forward(self, x):\n        Tracker.seen[id(x)] = x\n        return x\n"
                    )
                },
            ),
            True,
            "Tracker.seen",
            edited=(
                "import collections\n"
                "from collections import OrderedDict\n\n\n"
                f"{HELPER_CODE}\n"
                "_BISECTOR_KEEP_LAST = 4  # items each bounded container keeps; the oldest go first\n"
                "class Tracker:\n    seen = _BisectorLRU(maxsize=_BISECTOR_KEEP_LAST)\n\n"
                "    def forward(self, x):\n        Tracker.seen[id(x)] = x\n        return x\n",
            ),
        ),
        Example(
            "a dict keyed by the call's step counter (attention maps kept for plotting)",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Attention",
                sources={
                    "m.py": (
                        "class Attention:\n    def __init__(self):\n        self.step = 0\n"
                        "        self.attn_maps = {}\n\n    def forward(self, x):\n"
                        "        self.attn_maps[self.step] = x.softmax(-1)\n        self.step += 1\n"
                        "        return x\n\n    def latest_map(self):\n"
                        "        return self.attn_maps[max(self.attn_maps)]\n"
                    )
                },
            ),
            True,
            "a new key every call",
            edited=(
                "import collections\n"
                f"{HELPER_CODE}\n"
                "_BISECTOR_KEEP_LAST = 4  # items each bounded container keeps; the oldest go first\n"
                "class Attention:\n    def __init__(self):\n        self.step = 0\n"
                "        self.attn_maps = _BisectorLRU(maxsize=_BISECTOR_KEEP_LAST)\n\n    def forward(self, x):\n"
                "        self.attn_maps[self.step] = x.softmax(-1)\n        self.step += 1\n"
                "        return x\n\n    def latest_map(self):\n"
                "        return self.attn_maps[max(self.attn_maps)]\n",
            ),
        ),
        Example(
            "a cache keyed by a hash of the input, in a child the whole model builds",
            FixTarget(
                "eager",
                LEAK,
                region_type="m.Net",
                sources={
                    "m.py": (
                        "import hashlib\n\nimport torch\n\n\nclass Encoder(torch.nn.Module):\n"
                        "    def __init__(self):\n        super().__init__()\n        self.cache = dict()\n\n"
                        "    def forward(self, x):\n        key = hashlib.sha1(x.numpy().tobytes()).hexdigest()\n"
                        "        hit = self.cache.get(key)\n        if hit is None:\n"
                        "            hit = self.cache[key] = torch.tanh(x)\n        return hit\n\n\n"
                        "class Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                        "        self.encoder = Encoder()\n\n    def forward(self, x):\n"
                        "        return self.encoder(x)\n"
                    )
                },
            ),
            True,
            "self.cache",
            edited=(
                "import collections\n"
                "import hashlib\n\nimport torch\n\n\n"
                f"{HELPER_CODE}\n"
                "_BISECTOR_KEEP_LAST = 4  # items each bounded container keeps; the oldest go first\n"
                "class Encoder(torch.nn.Module):\n"
                "    def __init__(self):\n        super().__init__()\n"
                "        self.cache = _BisectorLRU(maxsize=_BISECTOR_KEEP_LAST)\n\n"
                "    def forward(self, x):\n        key = hashlib.sha1(x.numpy().tobytes()).hexdigest()\n"
                "        hit = self.cache.get(key)\n        if hit is None:\n"
                "            hit = self.cache[key] = torch.tanh(x)\n        return hit\n\n\n"
                "class Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                "        self.encoder = Encoder()\n\n    def forward(self, x):\n        return self.encoder(x)\n",
            ),
        ),
        Example(
            "a mutable default argument used as a memo",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Pos",
                sources={
                    "m.py": (
                        "import torch\n\n\ndef positions(n, cache={}):\n    if n not in cache:\n"
                        "        cache[n] = torch.arange(n)\n    return cache[n]\n\n\n"
                        "class Pos:\n    def forward(self, x):\n        return x + positions(x.shape[-1])\n"
                    )
                },
            ),
            True,
            "cache=",
            edited=(
                "import collections\n"
                "import torch\n\n\n"
                f"{HELPER_CODE}\n"
                "_BISECTOR_MEMO_MAX = 8  # entries each bounded memo keeps; the least recently used go first\n"
                "def positions(n, cache=_BisectorLRU(maxsize=_BISECTOR_MEMO_MAX)):\n    if n not in cache:\n"
                "        cache[n] = torch.arange(n)\n    return cache[n]\n\n\n"
                "class Pos:\n    def forward(self, x):\n        return x + positions(x.shape[-1])\n",
            ),
        ),
        Example(
            "a memo that already evicts is bounded",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Table",
                sources={
                    "m.py": (
                        "class Table:\n    def __init__(self):\n        self.cache = {}\n\n    def forward(self, x):\n"
                        "        self.cache[x.shape] = x\n        if len(self.cache) > 4:\n"
                        "            self.cache.pop(next(iter(self.cache)))\n        return x\n"
                    )
                },
            ),
            False,
        ),
        Example(
            "a dict local to forward is freed when it returns",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Table",
                sources={
                    "m.py": "class Table:\n    def forward(self, x):\n        seen = {}\n        seen[x.shape] = x\n"
                },
            ),
            False,
        ),
        Example(
            "a module dict the region's code never fills",
            FixTarget(
                "eager",
                SHAPE_GROWTH,
                region_type="m.Table",
                sources={
                    "m.py": (
                        "NAMES = {}\n\n\ndef register(k, v):\n    NAMES[k] = v\n\n\n"
                        "class Table:\n    def forward(self, x):\n        return x\n"
                    )
                },
            ),
            False,
        ),
    )


MEMO_WHY = "entries each bounded memo keeps; the least recently used go first"


def bound_memo(
    source: str, c: Container, name: str = MEMO_NAME, keep: int = MEMO_MAX, why: str = MEMO_WHY
) -> str | None:
    """c bounded at every binding by the LRU helper (maxsize=name), the helper and the bound
    (`name = keep  # why`) written next to it."""

    def lru(old: cst.BaseExpression) -> cst.BaseExpression | None:
        if _cst.dotted(old) == "" and isinstance(old, cst.Call) and _cst.dotted(old.func) == HELPER:
            return old
        if isinstance(old, cst.Dict) and not old.elements:
            return cst.parse_expression(f"{HELPER}(maxsize={name})")
        if (
            isinstance(old, cst.Call)
            and not old.args
            and _cst.dotted(old.func)
            in (
                "dict",
                "OrderedDict",
                "collections.OrderedDict",
            )
        ):
            return cst.parse_expression(f"{HELPER}(maxsize={name})")
        return None

    after, n = rebind(source, c, lru)
    if n <= 0:
        return None
    code = HELPER_CODE + "\n" if f"class {HELPER}(" not in after else ""
    code += constant_line(after, name, keep, why)
    after = with_block(after, code, c.line) if code else after
    return _cst.ensure_import(after, "import collections")


FIXER = BoundedMemo()
