"""The search against fake oracles: every tree shape and culprit placement, probes counted."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import pytest

from bisector.judge.search import Outcome, Search, search
from bisector.model.tree import Tree


def chain(depth: int, branching: int = 2) -> list[str]:
    """A tree `depth` levels deep, `branching` children per node."""
    paths = []
    frontier = [""]
    for _ in range(depth):
        nxt = []
        for p in frontier:
            for i in range(branching):
                c = f"{p}.{i}" if p else str(i)
                paths.append(c)
                nxt.append(c)
        frontier = nxt
    return paths


WIDE = [f"layers.{i}" for i in range(16)] + ["layers"]
DEEP = chain(6, 2)  # 126 modules below the root
BUSHY = chain(3, 4)  # 84 modules
HFLIKE = (
    ["wte", "wpe", "drop", "h", "ln_f"]
    + [f"h.{i}" for i in range(4)]
    + [f"h.{i}.{m}" for i in range(4) for m in ("ln_1", "attn", "ln_2", "mlp")]
    + [f"h.{i}.attn.{m}" for i in range(4) for m in ("c_attn", "c_proj", "attn_dropout", "resid_dropout")]
    + [f"h.{i}.mlp.{m}" for i in range(4) for m in ("c_fc", "c_proj", "act", "dropout")]
)


class FakeOracle:
    """A region set misbehaves when it contains a culprit or an ancestor of one. own: regions
    whose own code (not their children) leaks. broken: regions that cannot be probed alone."""

    def __init__(self, culprits: dict[str, str], broken: dict[str, str] | None = None, exact: bool = True) -> None:
        self.culprits = culprits
        self.broken = broken or {}
        self.exact = exact
        self.calls: list[tuple[str, ...]] = []

    def covers(self, region: str, culprit: str) -> bool:
        return region == "" or culprit == region or culprit.startswith(region + ".")

    def __call__(self, regions: tuple[str, ...]) -> Outcome:
        self.calls.append(regions)
        if len(regions) == 1 and regions[0] in self.broken:
            return Outcome(self.broken[regions[0]], message="cannot run alone")
        hits = [(c, k) for c, k in self.culprits.items() if any(self.covers(r, c) for r in regions)]
        if not hits:
            return Outcome("clean")
        kind = "leak" if any(k == "leak" for _, k in hits) else "shape-growth"
        # Each culprit leaks one object per call (exact counts, like real Python-level leaks).
        figures = {
            "exact": self.exact,
            "objects_per_call": float(sum(1 for _, k in hits if k == "leak")),
            "objects_per_new_shape": float(sum(1 for _, k in hits if k != "leak")),
        }
        return Outcome(kind, figures)


def run(paths: list[str], culprits: dict[str, str], broken=None, executor=None, exact=True):
    tree = Tree.from_paths(paths)
    oracle = FakeOracle(culprits, broken, exact)
    root = oracle(("",))
    state = Search(tree, oracle, executor).run("", root)
    return state, oracle


def found(state) -> dict[str, tuple[str, bool]]:
    return {c.region: (c.kind, c.own_code) for c in state.culprits}


@pytest.mark.parametrize(
    "name, paths, culprits",
    [
        ("wide, one leaf", WIDE, {"layers.11": "leak"}),
        ("wide, first leaf", WIDE, {"layers.0": "leak"}),
        ("deep, one leaf", DEEP, {"1.0.1.1.0.1": "leak"}),
        ("bushy, one leaf", BUSHY, {"2.3.1": "shape-growth"}),
        ("hf-like, deep act", HFLIKE, {"h.2.mlp.act": "leak"}),
        ("hf-like, own code of a block", HFLIKE, {"h.1": "leak"}),
    ],
)
@pytest.mark.parametrize("exact", [True, False], ids=["objects", "bytes-only"])
def test_single_culprit_found_within_the_probe_budget(name, paths, culprits, exact) -> None:
    state, oracle = run(paths, culprits, exact=exact)
    region, kind = next(iter(culprits.items()))
    children = Tree.from_paths(paths).children(region)
    assert found(state) == {region: (kind, True)}
    n = len(paths) + 1
    assert state.probes <= 2 * math.log2(n) + 6, (name, state.probes, oracle.calls)
    assert state.probes < n  # fewer than probing every module
    assert state.complete
    assert not children or all((c,) in state.tested or any(c in g for g in state.tested) for c in children)


@pytest.mark.parametrize("exact", [True, False], ids=["objects", "bytes-only"])
@pytest.mark.parametrize(
    "paths, culprits",
    [
        (WIDE, {"layers.2": "leak", "layers.13": "leak"}),
        (WIDE, {"layers.6": "leak", "layers.7": "shape-growth"}),
        (DEEP, {"0.0.0.0.0.0": "leak", "1.1.1.1.1.1": "leak"}),
        (HFLIKE, {"h.0.mlp.act": "leak", "h.3.attn.c_attn": "shape-growth"}),
        (BUSHY, {"0.2.3": "leak", "0.1.2": "leak"}),
    ],
)
def test_every_culprit_is_found(paths, culprits, exact) -> None:
    state, _ = run(paths, culprits, exact=exact)
    assert {r: k for r, (k, _) in found(state).items()} == culprits


@pytest.mark.parametrize("exact", [True, False], ids=["objects", "bytes-only"])
def test_a_culprit_inside_a_culprit(exact) -> None:
    """0.1 leaks in its own code and through its child 0.1.2: with exact counts both are named
    (0.1 leaks 2 objects per call, its children together 1); with bytes only, the deeper one."""
    state, _ = run(BUSHY, {"0.1": "leak", "0.1.2": "leak"}, exact=exact)
    if exact:
        assert found(state) == {"0.1": ("leak", True), "0.1.2": ("leak", True)}
        own = next(c for c in state.culprits if c.region == "0.1")
        assert own.outcome.figures["objects_per_call"] == 1 and own.outcome.figures["beyond_children"]
    else:
        assert found(state) == {"0.1.2": ("leak", True)}


def test_clean_root_means_no_search() -> None:
    tree = Tree.from_paths(WIDE)
    oracle = FakeOracle({})
    state = search(tree, oracle(("",)), oracle)
    assert state.culprits == [] and state.probes == 1 and len(oracle.calls) == 1


def test_own_code_when_no_child_misbehaves() -> None:
    state, _ = run(["a", "a.x", "a.y", "b"], {"a": "leak"})
    assert found(state) == {"a": ("leak", True)}
    state, _ = run([], {"": "leak"})  # a model without children
    assert found(state) == {"": ("leak", True)}


def test_one_leaking_child_among_k_takes_about_log2_k_probes() -> None:
    for k in (4, 8, 16, 32, 64):
        paths = [f"c{i}" for i in range(k)]
        state, _ = run(paths, {f"c{k - 1}": "leak"})
        assert state.probes <= 2 * math.log2(k) + 3, (k, state.probes)


def test_a_region_that_cannot_run_alone_is_reported_and_its_children_searched() -> None:
    paths = ["enc", "enc.a", "enc.b", "enc.b.x", "enc.b.y", "dec"]
    state, _ = run(paths, {"enc.b.y": "leak"}, broken={"enc": "failed", "enc.a": "crashed"})
    assert found(state) == {"enc.b.y": ("leak", True)}
    assert set(state.unprobeable) == {"enc", "enc.a"}
    assert state.unprobeable["enc.a"].kind == "crashed"


def test_parallel_search_finds_the_same_culprits() -> None:
    culprits = {"h.0.mlp.act": "leak", "h.3.attn.c_attn": "leak", "wpe": "shape-growth"}
    seq, _ = run(HFLIKE, culprits)
    with ThreadPoolExecutor(4) as ex:
        par, _ = run(HFLIKE, culprits, executor=ex)
    assert found(par) == found(seq)


def test_inconclusive_regions_are_reported_not_blamed() -> None:
    tree = Tree.from_paths(["a", "b"])

    def oracle(regions):
        if regions == ("b",):
            return Outcome("inconclusive")
        return Outcome("leak" if "a" in regions or regions == ("",) else "clean")

    state = search(tree, oracle(("",)), oracle)
    assert found(state) == {"a": ("leak", True)}
    assert "b" in state.inconclusive or ("b",) not in state.tested


def test_a_stopped_search_keeps_what_it_learned() -> None:
    tree = Tree.from_paths(DEEP)
    inner = FakeOracle({"1.0.1.1.0.1": "leak"})
    calls = 0

    def oracle(regions):
        nonlocal calls
        calls += 1
        if calls > 4:
            raise KeyboardInterrupt
        return inner(regions)

    s = Search(tree, oracle)
    with pytest.raises(KeyboardInterrupt):
        s.run("", Outcome("leak"))
    assert not s.state.complete
    assert s.state.probes == 5  # the root and the four answers given before the stop
    # A rerun with those answers cached asks only what it did not know.
    again = FakeOracle({"1.0.1.1.0.1": "leak"})
    s2 = Search(tree, again, state=s.state)
    s2.state.complete = False
    s2.run("", Outcome("leak"))
    assert found(s2.state) == {"1.0.1.1.0.1": ("leak", True)}
    assert not set(again.calls) & {k for k in list(s.state.tested)[:5]}


def test_uncalled_modules_are_skipped() -> None:
    from bisector.model.tree import Region

    tree = Tree.from_regions(
        [Region("", "Net", ("used", "unused")), Region("used", "L"), Region("unused", "L", called=False)]
    )
    oracle = FakeOracle({"used": "leak"})
    state = search(tree, oracle(("",)), oracle)
    assert found(state) == {"used": ("leak", True)}
    assert all("unused" not in g for g in oracle.calls)


def test_uncalled_containers_are_looked_through() -> None:
    from bisector.model.tree import Region

    tree = Tree.from_regions(
        [
            Region("", "Net", ("h", "ln")),
            Region("h", "ModuleList", ("h.0", "h.1"), called=False),
            Region("h.0", "Block"),
            Region("h.1", "Block", ("h.1.act",)),
            Region("h.1.act", "GELU"),
            Region("ln", "LayerNorm"),
        ]
    )
    assert tree.children("") == ["h.0", "h.1", "ln"]
    oracle = FakeOracle({"h.1.act": "leak"})
    state = search(tree, oracle(("",)), oracle)
    assert found(state) == {"h.1.act": ("leak", True)}
