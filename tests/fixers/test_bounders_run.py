"""The bounding fixers' edits run: each example's edited module is executed, its forward called
many times, and the container stays bounded while what its readers need survives (the recent
data, the memo's hits, the hook firing once per call)."""

from __future__ import annotations

import types

import pytest
import torch
from bisector.fixers import all_fixers

FIXERS = {f.name: f for f in all_fixers()}


def edited(fixer: str, example: str, which: int = 0) -> types.ModuleType:
    ex = next(e for e in FIXERS[fixer].examples if e.name.startswith(example))
    module = types.ModuleType("m")
    exec(compile(ex.edited[which], "m.py", "exec"), module.__dict__)
    return module


def test_a_module_memo_filled_from_a_helper_stays_bounded_and_hits() -> None:
    m = edited("bounded-memo", "a module-level memo keyed by length")
    attn = m.Attention()
    for t in range(1, 40):
        attn(torch.ones(t, t))
    assert len(m._MEMO) == m._BISECTOR_MEMO_MAX
    hit = m._MEMO[39]
    assert m.causal_mask(39) is hit  # a recent length still hits: the same tensor, not a new one
    assert 38 in m._MEMO and m._MEMO.get(1) is None


def test_a_memo_on_self_and_a_default_argument_stay_bounded() -> None:
    m = edited("bounded-memo", "a per-size feature cache on self")
    block = m.Block()
    for n in range(1, 30):
        block.forward(torch.zeros(n))
    assert len(block.feats) == m._BISECTOR_MEMO_MAX and (29,) in block.feats
    block.reset()
    block.forward(torch.zeros(3))
    assert len(block.feats) == 1 and block.feats.maxsize == m._BISECTOR_MEMO_MAX  # the reset is bounded too
    d = edited("bounded-memo", "a mutable default argument")
    for n in range(1, 30):
        d.Pos().forward(torch.zeros(n))
    cache = d.positions.__defaults__[0]
    assert len(cache) == d._BISECTOR_MEMO_MAX and d.positions(29) is cache[29]


def test_a_class_level_memo_stays_bounded() -> None:
    m = edited("bounded-memo", "a class-level OrderedDict registry")
    keep = [torch.zeros(1) for _ in range(30)]
    for x in keep:
        m.Tracker().forward(x)
    assert len(m.Tracker.seen) == m._BISECTOR_KEEP_LAST and m.Tracker.seen[id(keep[-1])] is keep[-1]


def test_a_finite_lru_cache_keeps_hitting() -> None:
    m = edited("finite-lru-cache", "a causal mask memoised")
    attn = m.Attn()
    for t in range(1, 40):
        attn(torch.ones(t, t))
    info = m.causal_mask.cache_info()
    assert info.maxsize == m._BISECTOR_MEMO_MAX and info.currsize == m._BISECTOR_MEMO_MAX
    attn(torch.ones(39, 39))
    assert m.causal_mask.cache_info().hits == info.hits + 1


def test_a_deque_gets_maxlen_at_its_definition_and_reset_and_summary_still_reads_it() -> None:
    m = edited("bounded-containers", "a deque without maxlen on self")
    meter = m.Meter()
    for i in range(50):
        meter(torch.full((2,), float(i)))
    assert len(meter.recent) == m._BISECTOR_KEEP_LAST
    assert meter.summary() == pytest.approx(sum(range(46, 50)) / 4)  # the latest, not 0.0
    meter.reset()
    for _ in range(10):
        meter(torch.full((2,), 1.0))
    assert len(meter.recent) == m._BISECTOR_KEEP_LAST and meter.summary() == 1.0


def test_lists_on_a_class_and_filled_by_a_helper_keep_their_last_items() -> None:
    m = edited("bounded-containers", "a class-level list")
    layer = m.Layer()
    for i in range(20):
        layer.forward(i)
    assert m.Layer.outputs == [16, 17, 18, 19] and layer.last() == [18, 19]
    e = edited("bounded-containers", "a list on self filled in a helper")
    enc = e.Enc()
    for i in range(20):
        enc.forward(i)
    assert enc.trace == [16, 17, 18, 19]
    h = edited("bounded-containers", "a module-level deque")
    for i in range(20):
        h.Head().forward(i)
    assert list(h.LAST) == [16, 17, 18, 19]


def test_a_tensor_bank_keeps_its_latest_rows_dtype_and_device() -> None:
    m = edited("tensor-bank", "a memory bank on self")
    head = m.Head()
    for i in range(30):
        head(torch.full((1, 256), float(i)))
    bank = head.negatives()
    assert bank.shape == (m._BISECTOR_KEEP_ROWS, 256) and bank.dtype == torch.float32
    assert bank[:, 0].tolist() == [float(i) for i in range(22, 30)]
    assert "bank" in dict(head.named_buffers())  # still a buffer: state_dict and .to() keep it
    q = edited("tensor-bank", "a module-level queue grown on dim 1")
    for i in range(30):
        q.Enc().forward(torch.full((1, 128), float(i)))
    assert q.QUEUE.shape == (128, q._BISECTOR_KEEP_ROWS) and q.QUEUE[0, 0].item() == 29.0  # newest first


def test_a_hook_registered_per_call_stays_one_and_fires_once_per_call() -> None:
    m = edited("hook-once", "a forward that hooks its child")
    net = m.Net()
    for _ in range(10):
        net(torch.zeros(1, 3, 8, 8))
    assert len(net.conv._forward_hooks) == 1 and net.seen == 10
    b = edited("hook-once", "a pre-hook and a global module hook")
    from torch.nn.modules import module as torch_module

    block = b.Block()
    block.lin = torch.nn.Linear(2, 2)
    before = len(torch_module._global_forward_hooks)
    try:
        for _ in range(5):
            block(torch.zeros(1, 2))
        assert len(block.lin._forward_pre_hooks) == 1
        assert len(torch_module._global_forward_hooks) == before + 1
    finally:
        block._bisector__watch_hook_2.remove()


def test_a_retention_path_picks_the_container_to_bound() -> None:
    """With the walker's evidence, the fixer bounds the container it names, even one the region's
    code does not reach by name (filled through another module's helper), and only that one."""
    from bisector.fixers.base import FixTarget

    src = (
        "_A = {}\n_B = {}\n\n\ndef fill(k, v):\n    _A[k] = v\n    _B[k] = v\n\n\n"
        "class Net:\n    def forward(self, x):\n        return x\n"
    )
    path = {"root": "global", "path": "m._B", "container": "dict", "attr": "_B", "defined_at": "m.py:2"}
    target = FixTarget("eager", "shape-growth", region_type="m.Net", sources={"m.py": src}, figures={})
    assert FIXERS["bounded-memo"].propose(target) == []  # forward never calls fill: nothing to go on
    with_path = FixTarget(
        "eager", "shape-growth", region_type="m.Net", sources={"m.py": src}, figures={"retention": (path,)}
    )
    (cand,) = FIXERS["bounded-memo"].propose(with_path)
    after = cand.edits[0].after
    assert "_B = _BisectorLRU(maxsize=_BISECTOR_MEMO_MAX)" in after and "_A = {}" in after


def test_a_dict_keyed_per_call_keeps_its_latest_entries_and_the_hash_cache_still_hits() -> None:
    m = edited("bounded-memo", "a dict keyed by the call's step counter")
    attn = m.Attention()
    for i in range(30):
        attn.forward(torch.full((2, 3), float(i)))
    assert sorted(attn.attn_maps) == [26, 27, 28, 29] and attn.attn_maps.maxsize == m._BISECTOR_KEEP_LAST
    assert torch.allclose(attn.latest_map(), torch.full((2, 3), 29.0).softmax(-1))  # the newest map
    h = edited("bounded-memo", "a cache keyed by a hash of the input")
    net = h.Net()
    xs = [torch.full((2,), float(i)) for i in range(20)]
    for x in xs:
        net(x)
    assert len(net.encoder.cache) == h._BISECTOR_KEEP_LAST
    assert net(xs[-1].clone()) is net(xs[-1])  # a recent input's content still hits: the same tensor


def test_a_closure_list_and_a_dict_of_lists_keep_their_latest_items() -> None:
    m = edited("bounded-containers", "a hook made by a factory")
    layer = torch.nn.Linear(2, 2)
    m.Net(layer)
    for i in range(20):
        layer(torch.full((1, 2), float(i)))
    (hook,) = layer._forward_hooks.values()
    store = hook.__closure__[0].cell_contents
    assert len(store) == m._BISECTOR_KEEP_LAST and torch.equal(store[-1], layer(torch.full((1, 2), 19.0)))
    w = edited("bounded-containers", "a method that registers a nested hook")
    net = w.Net(torch.nn.Linear(2, 2))
    seen = net.watch()
    for _ in range(20):
        net.layer(torch.zeros(1, 2))
    assert len(seen) == w._BISECTOR_KEEP_LAST  # the list the caller holds is the bounded one
    d = edited("bounded-containers", "a module-level defaultdict(list)")
    for i in range(20):
        d.Block().forward(torch.full((2,), float(i)))
    assert d.STATS["act"] == [16.0, 17.0, 18.0, 19.0] and d.report() == {"act": 17.5}
    s = edited("bounded-containers", "a dict of lists on self")
    block = s.Block()
    for i in range(20):
        block.forward(torch.full((2,), float(i)))
        block.forward(torch.full((2,), i, dtype=torch.int64))
    assert set(block.stats) == {torch.float32, torch.int64} and all(len(v) == 4 for v in block.stats.values())
    assert float(block.totals()[torch.float32]) == 2 * (16 + 17 + 18 + 19)


def test_a_retention_path_names_a_closure_the_source_alone_does_not_show() -> None:
    """The factory gets a list the source cannot see (`make_recorder(self.buf)`): only the walker's
    path (root "closure", the nested function's qualname) makes it a candidate."""
    from bisector.fixers.base import FixTarget

    src = (
        "def make_recorder(store):\n    def record(module, args, output):\n        store.append(output)\n\n"
        "    return record\n\n\nclass Net:\n    def __init__(self, layer, buf):\n"
        "        layer.register_forward_hook(make_recorder(buf))\n"
    )
    fixer = FIXERS["bounded-containers"]
    assert fixer.propose(FixTarget("eager", "leak", region_type="m.Linear", sources={"m.py": src})) == []
    path = {
        "root": "closure",
        "path": "m.make_recorder.<locals>.record.__closure__[store]",
        "container": "list",
        "attr": "store",
        "qualname": "make_recorder.<locals>.record",
    }
    target = FixTarget("eager", "leak", region_type="m.Linear", sources={"m.py": src}, figures={"retention": (path,)})
    (cand,) = fixer.propose(target)
    assert "del store[:-_BISECTOR_KEEP_LAST]" in cand.edits[0].after


def test_a_memory_handler_keeps_its_newest_records_or_flushes_them_all_to_its_target() -> None:
    import logging

    m = edited("bounded-log-records", "a module-level MemoryHandler without a target")
    m.log.setLevel(logging.DEBUG)
    m.log.propagate = False
    try:
        for i in range(30):
            m.Encoder().forward(i)
        assert len(m.RECENT.buffer) == m._BISECTOR_KEEP_LAST
        assert m.RECENT.buffer[-1].getMessage() == "out 29"  # the newest record stays readable
    finally:
        m.log.removeHandler(m.RECENT)
    t = edited("bounded-log-records", "a MemoryHandler on self with a target")
    got: list[str] = []

    class Sink(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record.getMessage())

    net = t.Net(Sink())
    logging.getLogger("net").setLevel(logging.INFO)
    try:
        for i in range(30):
            net.forward(i)
        assert len(net.records.buffer) < t._BISECTOR_KEEP_LAST
        net.records.flush()
        assert got == [f"x {i}" for i in range(30)]  # the target still receives every record, in order
    finally:
        logging.getLogger("net").removeHandler(net.records)


def test_the_walker_s_buffer_path_picks_the_handler_to_bound() -> None:
    from bisector.fixers.base import FixTarget

    src = "import logging.handlers\n\nA = logging.handlers.MemoryHandler(10)\nB = logging.handlers.MemoryHandler(10)\n"

    def proposed(*paths: dict) -> list[str]:
        figures = {"retention": paths} if paths else {}
        target = FixTarget("eager", "leak", region_type="m.Net", sources={"m.py": src}, figures=figures)
        return [c.edits[0].summary for c in FIXERS["bounded-log-records"].propose(target)]

    assert proposed() == ["bound A to 4 records", "bound B to 4 records"]  # no evidence: both keep every record
    assert proposed({"root": "global", "path": "m.B.buffer", "container": "list", "attr": "buffer"}) == [
        "bound B to 4 records"
    ]
    assert proposed({"root": "global", "path": "m.KEEP", "container": "list", "attr": "KEEP"}) == []
