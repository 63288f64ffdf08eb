"""Tests generated from each fixer's own examples: where it applies it proposes at least one
candidate (whose summary or edited source says what the example expects, and whose edits give
exactly the sources the example states), where it does not, it proposes nothing. Source edits
must parse and be idempotent where applied twice."""

from __future__ import annotations

import ast

import pytest
from bisector.fixers import Fixer, addresses, all_fixers

FIXERS = all_fixers()
CASES = [(f, ex) for f in FIXERS for ex in f.examples]


def test_every_fixer_is_a_fixer_with_examples_both_ways() -> None:
    assert len(FIXERS) >= 8
    for f in FIXERS:
        assert isinstance(f, Fixer)
        assert f.name and f.description and f.stages and f.kinds
        assert any(ex.applies for ex in f.examples), f.name
        assert any(not ex.applies for ex in f.examples), f.name


@pytest.mark.parametrize("fixer, example", CASES, ids=[f"{f.name}: {ex.name}" for f, ex in CASES])
def test_fixer_example(fixer, example) -> None:
    proposed = fixer.propose(example.target) if addresses(fixer, example.target) else []
    if not example.applies:
        assert proposed == [], [c.summary for c in proposed]
        return
    assert proposed, "no candidate where the example says the fixer applies"
    for c in proposed:
        assert c.fixer == fixer.name and c.summary
        for e in c.edits:
            ast.parse(e.after)  # still Python
            assert e.after != e.before
            assert e.path in example.target.sources
    if example.expect:
        texts = (
            [c.summary for c in proposed]
            + [e.after for c in proposed for e in c.edits]
            + [str(c.probe) for c in proposed]
        )
        assert any(example.expect in t for t in texts), texts
    # Every example that edits code states the edited sources, compared byte for byte.
    assert [e.after for c in proposed for e in c.edits] == list(example.edited)


def test_source_edits_keep_comments_and_formatting() -> None:
    from bisector.fixers.append_only import FIXER

    example = next(ex for ex in FIXER.examples if ex.name.startswith("a list on the module"))
    (edit,) = [
        e for c in FIXER.propose(example.target) for e in c.edits if "deque" not in e.after and "del " not in e.after
    ]
    before_lines = edit.before.splitlines()
    after_lines = edit.after.splitlines()
    assert [ln for ln in before_lines if "history.append" not in ln] == after_lines


def test_removing_the_only_statement_of_a_block_leaves_valid_python() -> None:
    from bisector.fixers.append_only import FIXER
    from bisector.fixers.base import FixTarget

    src = (
        "KEPT = []\n\nclass K:\n    def forward(self, x):\n        if x is not None:\n"
        "            KEPT.append(x)\n        return x\n"
    )
    (cand,) = [
        c
        for c in FIXER.propose(FixTarget("eager", "leak", region_type="m.K", sources={"m.py": src}))
        if c.edits and "del " not in c.edits[0].after
    ]
    after = cand.edits[0].after
    ast.parse(after)
    assert "pass" in after and "KEPT.append" not in after


def test_a_plugin_fixer_from_an_entry_point_is_listed(monkeypatch) -> None:
    from importlib import metadata

    import bisector.fixers as registry

    class Plugin:
        name = "plugin-fixer"
        description = "from another package"
        stages = ("eager",)
        kinds = ("leak",)
        examples = ()

        def propose(self, target):
            return []

    class EP:
        name = "plugin"

        def load(self):
            return Plugin

    class Broken:
        name = "broken"

        def load(self):
            raise ImportError("not installed")

    monkeypatch.setattr(
        metadata, "entry_points", lambda **kw: [EP(), Broken()] if kw.get("group") == registry.ENTRY_POINT_GROUP else []
    )
    fixers = registry.all_fixers()
    names = [f.name for f in fixers]
    assert "plugin-fixer" in names and "append-only" in names and "python-leaks" in registry.names(fixers)
