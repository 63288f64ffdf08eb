"""Retention paths: the walker against every kind of root, in-process (no probe), and the libcst
site finder against the lines that define and grow each container."""

from __future__ import annotations

import functools
import logging
import logging.handlers
import sys
import textwrap
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from bisector.judge.retention import describe, hint, paths
from bisector.judge.retention_sites import find_sites
from bisector.probe.retention import RetentionTracer, classify_keys

CALLS = 6


def held(
    model: Any,
    call: Callable[[int], None],
    modules: tuple = (),
    libraries: tuple = (),
    dims: tuple = (),
    calls: int = CALLS,
) -> dict[str, dict[str, Any]]:
    """The rows a span of ``calls`` calls gives, by path (one warm-up call first)."""
    tracer = RetentionTracer(model, lambda: (list(modules), list(libraries)), [("repeat", 1, calls)], lambda a, b: dims)
    for i in range(calls + 1):
        tracer.before(i)
        call(i)
        tracer.after(i)
    out = tracer.result()
    assert out["cost_s"] >= 0
    return {r["path"]: r for r in out["repeat"]["rows"]}


def module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


class Child(nn.Module):
    registry: list = []

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.history: list = []
        self.state = types.SimpleNamespace(seen=[])
        self.register_buffer("bank", torch.zeros(0, 4))
        self.blocks = nn.ModuleList()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.child = Child()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.child(x)


def test_module_attribute_nested_attribute_and_bytes() -> None:
    net = Net()

    def call(i: int) -> None:
        net.child.history.append(torch.randn(8, 4))
        net.child.state.seen.append((torch.randn(2),))

    rows = held(net, call)
    row = rows["child.history"]
    assert (row["root"], row["container"], row["entries_per_call"]) == ("module-attr", "list", 1.0)
    assert row["qualname"] == "Child" and row["attr"] == "history"
    assert row["bytes_per_call"] >= 8 * 4 * 4  # the walk credits each tensor's storage
    assert rows["child.state.seen"]["entries_per_call"] == 1.0
    assert "child.lin.weight" not in rows  # what does not grow is not reported


def test_hooks_registered_per_call() -> None:
    net = Net()

    def call(i: int) -> None:
        net.child.lin.register_forward_hook(lambda m, a, o: None)
        net(torch.randn(2, 4))

    row = held(net, call)["child.lin._forward_hooks"]
    assert (row["root"], row["container"], row["entries_per_call"]) == ("hooks", "OrderedDict", 1.0)
    assert row["bytes_per_call"] > 0  # the new hook functions were found in it


def test_module_list_and_tensor_bank() -> None:
    net = Net()

    def call(i: int) -> None:
        net.child.blocks.append(nn.Identity())
        net.child.bank = torch.cat([net.child.bank, torch.randn(1, 4)])

    rows = held(net, call)
    assert rows["child.blocks"]["container"] == "ModuleList"
    assert rows["child.blocks"]["entries_per_call"] == 1.0
    bank = rows["child.bank"]
    assert (bank["container"], bank["entries_per_call"], bank["bytes_per_call"]) == ("Tensor", 1.0, 16.0)


def test_module_global_keyed_by_input_length() -> None:
    layers = module("pkg.layers", _MEMO={})

    def call(i: int) -> None:
        layers._MEMO[10 + i] = torch.ones(10 + i, 10 + i)

    row = held(None, call, modules=(layers,), dims=tuple(range(10, 10 + CALLS + 1)))["pkg.layers._MEMO"]
    assert (row["root"], row["container"], row["keys"]) == ("global", "dict", "input lengths")
    assert row["module"] == "pkg.layers"
    assert row["bytes_per_call"] >= 10 * 10 * 4  # the new entries' tensors are the dict's


def test_class_attribute() -> None:
    net = Net()
    before = len(Child.registry)
    rows = held(net, lambda i: Child.registry.append([i]))
    assert rows["Child.registry"]["root"] == "class-attr" and rows["Child.registry"]["entries_per_call"] == 1.0
    del Child.registry[before:]


def make_closure() -> Callable[[Any], None]:
    seen: list = []

    def remember(x: Any) -> None:
        seen.append(x)

    return remember


def collect(x: Any, bucket: list = []) -> None:  # noqa: B006 - the mutable default is the point
    bucket.append(x)


def test_closure_cell_and_default_argument() -> None:
    remember = make_closure()
    mod = module("pkg.funcs", remember=remember, collect=collect)
    collect.__module__ = remember.__module__ = "pkg.funcs"  # surveyed as that module's own functions
    rows = held(None, lambda i: (remember([i]), collect([i])), modules=(mod,))
    closure = rows[f"pkg.funcs.{remember.__qualname__}.__closure__[seen]"]
    default = rows["pkg.funcs.collect.__defaults__[bucket]"]
    assert (closure["root"], closure["attr"], closure["entries_per_call"]) == ("closure", "seen", 1.0)
    assert (default["root"], default["attr"], default["entries_per_call"]) == ("default-arg", "bucket", 1.0)


def test_lru_cache_growth_and_its_keys() -> None:
    @functools.lru_cache(maxsize=None)  # noqa: UP033 - as the models in the wild write it
    def causal_mask(t: int) -> torch.Tensor:
        return torch.ones(t, t).tril()

    causal_mask.__wrapped__.__module__ = "pkg.masks"
    mod = module("pkg.masks", causal_mask=causal_mask)
    dims = tuple(range(20, 20 + CALLS + 1))
    row = held(None, lambda i: causal_mask(20 + i), modules=(mod,), dims=dims)[
        f"pkg.masks.{causal_mask.__qualname__}.cache_info()"
    ]
    assert (row["root"], row["container"], row["entries_per_call"], row["keys"]) == (
        "lru-cache",
        "lru_cache",
        1.0,
        "input lengths",
    )


def test_logging_handler_buffer() -> None:
    log = logging.getLogger("bisector-test-retention")
    handler = logging.handlers.MemoryHandler(capacity=10**9)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        rows = held(None, lambda i: log.debug("activations %s", torch.randn(3)))
        row = rows["logging:bisector-test-retention.handlers[0].buffer"]
        assert (row["root"], row["container"], row["entries_per_call"]) == ("logging", "list", 1.0)
        assert row["bytes_per_call"] > 0
    finally:
        log.removeHandler(handler)
        handler.buffer.clear()


def test_library_registry_and_an_unsurveyed_module_found_by_the_walk() -> None:
    lib = module("somelib.registry", HANDLERS={})
    hidden = module("bisector_test_hidden", KEPT=[])
    sys.modules["bisector_test_hidden"] = hidden
    try:
        rows = held(None, lambda i: (lib.HANDLERS.setdefault(f"h{i}", [i]), hidden.KEPT.append([i])), libraries=(lib,))
    finally:
        del sys.modules["bisector_test_hidden"]
    assert rows["somelib.registry.HANDLERS"]["root"] == "registry"
    # Not surveyed: get_referrers climbs from the new lists to the module's dict, and names it.
    walked = rows["bisector_test_hidden.KEPT"]
    assert (walked["root"], walked["entries_per_call"]) == ("registry", 1.0)


def test_growth_below_a_large_dict_is_found_by_the_walk() -> None:
    net = Net()
    net.child.cache = {k: [] for k in range(200)}  # too large to survey entry by entry
    rows = held(net, lambda i: net.child.cache[7].append([i]))
    assert rows["child.cache"]["entries_per_call"] == 1.0


def test_what_is_replaced_or_bounded_is_not_growth() -> None:
    net = Net()
    net.child.last = None
    from collections import deque

    net.child.recent = deque(maxlen=2)

    def call(i: int) -> None:
        net.child.last = torch.randn(4)
        net.child.recent.append([i])
        net.child.history = [[i]]

    assert held(net, call) == {}


@pytest.mark.parametrize(
    ("keys", "kind"),
    [
        ([16, 32, 48], "input lengths"),
        ([(2, 3, 16), (2, 3, 32)], "shapes"),
        ([torch.Size([4, 16])], "shapes"),
        ([torch.float16, torch.bfloat16], "dtypes"),
        ([(16, torch.float32)], "dtypes"),
        ([torch.device("cpu"), "cuda:0"], "devices"),
        (["a", "b"], ""),
        ([7, 9], ""),  # ints that are no input dim
    ],
)
def test_key_classification(keys: list, kind: str) -> None:
    assert classify_keys(keys, dims=[16, 32, 48]) == kind


SOURCE = textwrap.dedent(
    """\
    import functools
    import torch
    from torch import nn

    _MEMO = {}


    @functools.lru_cache(maxsize=None)
    def causal_mask(t):
        return torch.ones(t, t)


    def attend(t):
        if t not in _MEMO:
            _MEMO[t] = causal_mask(t)
        return _MEMO[t]


    class Block(nn.Module):
        registry = []

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv1d(4, 4, 1)
            self.history = []
            self.register_buffer("bank", torch.zeros(0, 4))

        def forward(self, x):
            self.conv1.register_forward_hook(lambda m, a, o: o)
            self.history.append(x)
            self.bank = torch.cat([self.bank, x[:1]])
            Block.registry += [x]
            return attend(x.shape[-1]) @ x
    """
)


def lines(row: dict) -> tuple[list[int], list[int]]:
    found = find_sites(SOURCE, row, "m.py")
    return [s.line for s in found if s.kind == "defined"], [s.line for s in found if s.kind == "mutated"]


def test_site_finder_lines_for_each_root() -> None:
    assert lines({"root": "module-attr", "attr": "history", "qualname": "Block"}) == ([25], [30])
    assert lines({"root": "module-attr", "attr": "bank", "qualname": "Block"}) == ([26], [31])
    assert lines({"root": "global", "attr": "_MEMO"}) == ([5], [15])
    assert lines({"root": "class-attr", "attr": "registry", "qualname": "Block"}) == ([20], [32])
    assert lines({"root": "lru-cache", "attr": "causal_mask", "qualname": "causal_mask"}) == ([8], [15])
    defined, mutated = lines({"root": "hooks", "attr": "_forward_hooks", "qualname": "Conv1d"})
    assert (defined, mutated) == ([], [29])


def test_paths_merge_spans_and_name_the_sites(tmp_path) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    model = tmp_path / "m.py"
    model.write_text(SOURCE)
    row = {
        "root": "hooks",
        "path": "block.conv1._forward_hooks",
        "container": "OrderedDict",
        "entries_per_call": 1.0,
        "bytes_per_call": 300.0,
        "keys": "",
        "attr": "_forward_hooks",
        "module": "torch.nn.modules.conv",
        "qualname": "Conv1d",
        "file": "/site-packages/torch/nn/modules/conv.py",
    }
    memo = {**row, "root": "global", "path": "m._MEMO", "container": "dict", "attr": "_MEMO", "keys": "input lengths"}
    memo.update(module="m", qualname="", file=str(model), entries_per_call=0.0, bytes_per_call=None)
    data = {
        "repeat": {"calls": 8, "rows": [row]},
        "novel": {"calls": 6, "rows": [{**row, "entries_per_call": 1.0}, {**memo, "entries_per_call": 1.0}]},
    }
    got = paths(data, str(model))
    assert [r["path"] for r in got] == ["block.conv1._forward_hooks", "m._MEMO"]
    hooks, memo_row = got
    assert hooks["mutated_at"] == ["m.py:29"] and hooks["defined_at"] == ""
    assert (hooks["entries_per_call"], hooks["entries_per_new_shape"]) == (1.0, 0.0)
    assert (memo_row["entries_per_call"], memo_row["entries_per_new_shape"]) == (0.0, 1.0)
    assert memo_row["defined_at"] == "m.py:5" and memo_row["mutated_at"] == ["m.py:15"]
    assert set(hooks) >= {"root", "path", "container", "keys", "defined_at", "mutated_at", "attr", "module", "qualname"}
    text = describe(hooks)
    assert text == "held by block.conv1._forward_hooks (OrderedDict, +1 hook per call), registered at m.py:29"
    assert "keys are input lengths" in describe(memo_row)
    assert hint(got).startswith(text) and "register once" in (hint(got) or "")
    assert hint(()) is None


def test_html_report_and_issue_text_show_the_path() -> None:
    from bisector.reports.html import retention_table as _retention
    from bisector.reports.issue import issue_text
    from bisector.reports.targets import BundleTarget

    row = {
        "root": "global",
        "path": "pkg.layers._MEMO",
        "container": "dict",
        "entries_per_call": 0.0,
        "entries_per_new_shape": 1.0,
        "bytes_per_call": None,
        "keys": "input lengths",
        "defined_at": "pkg/layers.py:3",
        "mutated_at": ["pkg/layers.py:9"],
        "attr": "_MEMO",
        "module": "pkg.layers",
        "qualname": "",
    }
    html = _retention([row], "call")
    assert "<code>pkg.layers._MEMO</code>" in html and "pkg/layers.py:9" in html and "input lengths" in html
    assert _retention([], "call") == ""
    target = BundleTarget("eager", "attn", "shape-growth", {"retention": [row]}, (), ())
    text = issue_text("m.py:Net", target, {}, "env\n")
    assert "What holds it:\n\n- held by pkg.layers._MEMO (dict, +1 entry per new shape, keys are input lengths)" in text
    assert "grown at pkg/layers.py:9, defined at pkg/layers.py:3" in text
