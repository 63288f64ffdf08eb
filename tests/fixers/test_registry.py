"""The registry: built-in fixers and plugins, and the names `--fixer` accepts (a family's name
selects its members)."""

from __future__ import annotations

from bisector.fixers import all_fixers, family_of, names, select
from bisector.fixers.base import PYTHON_LEAKS

FAMILY = ["append-only", "accumulated-history", "shape-cache", "collecting-hooks"]


def test_python_leaks_is_the_family_of_one_fixer_per_pattern() -> None:
    fixers = all_fixers()
    assert [f.name for f in fixers if family_of(f) == PYTHON_LEAKS] == FAMILY
    assert PYTHON_LEAKS in names(fixers) and set(FAMILY) <= set(names(fixers))
    assert [f.name for f in select(fixers, [PYTHON_LEAKS])] == FAMILY
    assert [f.name for f in select(fixers, ["shape-cache", "ort-options"])] == ["shape-cache", "ort-options"]
    assert select(fixers, []) == fixers


def test_fix_accepts_the_family_name() -> None:
    from bisector.cli import _fixer_names

    assert PYTHON_LEAKS in _fixer_names() and "append-only" in _fixer_names()


def test_a_plugin_without_a_family_is_a_fixer_of_its_own() -> None:
    class Plugin:
        name = "plugin-fixer"
        description = "from another package"
        stages = ("eager",)
        kinds = ("leak",)
        examples = ()

        def propose(self, target):
            return []

    assert family_of(Plugin()) == "" and names([Plugin()]) == ["plugin-fixer"]
    assert select([Plugin()], [PYTHON_LEAKS]) == []
