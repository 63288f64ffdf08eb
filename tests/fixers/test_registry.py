"""The registry: built-in fixers and plugins, and the names `--fixer` accepts (a family's name
selects its members)."""

from __future__ import annotations

from bisector.fixers import all_fixers, family_of, names, select
from bisector.fixers.base import PYTHON_LEAKS

FAMILY = [
    "append-only",
    "accumulated-history",
    "shape-cache",
    "collecting-hooks",
    "bounded-memo",
    "finite-lru-cache",
    "bounded-containers",
    "tensor-bank",
    "hook-once",
    "bounded-log-records",
    "bounded-warning-registry",
]


def test_python_leaks_is_the_family_of_one_fixer_per_pattern() -> None:
    fixers = all_fixers()
    assert [f.name for f in fixers if family_of(f) == PYTHON_LEAKS] == FAMILY
    assert PYTHON_LEAKS in names(fixers) and set(FAMILY) <= set(names(fixers))
    assert [f.name for f in select(fixers, [PYTHON_LEAKS])] == FAMILY
    assert [f.name for f in select(fixers, ["shape-cache", "ort-options"])] == ["shape-cache", "ort-options"]
    assert select(fixers, []) == fixers


def test_fix_accepts_the_family_name() -> None:
    from bisector.cli.commands.fixers import fixer_names

    assert PYTHON_LEAKS in fixer_names() and "append-only" in fixer_names()


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


class _EntryPoint:
    """What importlib.metadata lists: a name, what it points at, and load()."""

    def __init__(self, name: str, value: str, load) -> None:
        self.name, self.value, self._load = name, value, load

    def load(self):
        return self._load()


def _plugins(monkeypatch, *eps: _EntryPoint) -> None:
    import bisector.fixers as registry

    monkeypatch.setattr(registry, "_entry_points", lambda: list(eps))
    monkeypatch.setattr(registry, "_WARNED", set())


def _raise(exc: Exception):
    def load():
        raise exc

    return load


def test_a_plugin_that_fails_to_load_warns_once_and_the_rest_load(monkeypatch, capsys) -> None:
    from bisector.fixers import load

    class Plugin:
        name = "plugin-fixer"
        description = "from another package"
        stages = ("eager",)
        kinds = ("leak",)
        examples = ()

        def propose(self, target):
            return []

    _plugins(
        monkeypatch,
        _EntryPoint("broken", "their_pkg.fix:FIXER", _raise(ImportError("No module named 'their_pkg'\nmore detail"))),
        _EntryPoint("plugin", "ok_pkg:Plugin", lambda: Plugin),
        _EntryPoint("not-a-fixer", "odd_pkg:THING", lambda: 42),
        _EntryPoint("again", "dup_pkg:FIXER", lambda: Plugin),
        _EntryPoint("append-only", "bisector.fixers.append_only:FIXER", _raise(AssertionError("never loaded"))),
    )
    first = load()
    again = load()
    assert [f.name for f in first.fixers][-1] == "plugin-fixer" and "append-only" in [f.name for f in first.fixers]
    assert [(b.name, b.value) for b in first.broken] == [
        ("broken", "their_pkg.fix:FIXER"),
        ("not-a-fixer", "odd_pkg:THING"),
        ("again", "dup_pkg:FIXER"),
    ]
    assert first.broken[0].error == "ImportError: No module named 'their_pkg'"
    assert first.broken[1].error.startswith("TypeError: odd_pkg:THING is not a Fixer")
    assert first.broken[2].error == "ValueError: a fixer named 'plugin-fixer' is already registered"
    assert again.broken == first.broken and [f.name for f in again.fixers] == [f.name for f in first.fixers]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3  # one line per broken plugin, however often the fixers load
    assert lines[0] == (
        "bisector: warning: fixer plugin 'broken' (their_pkg.fix:FIXER) failed to load, skipped: "
        "ImportError: No module named 'their_pkg'"
    )


def test_bisector_fixers_lists_a_broken_plugin(monkeypatch, capsys) -> None:
    import json

    from bisector.cli.commands.fixers import list_fixers

    missing = ImportError("No module named 'their_pkg'")
    _plugins(monkeypatch, _EntryPoint("broken", "their_pkg.fix:FIXER", _raise(missing)))
    assert list_fixers(json_out=True) == 0
    out = capsys.readouterr()
    rows = {r["name"]: r for r in json.loads(out.out)}
    assert rows["broken"]["status"] == "broken"
    assert rows["broken"]["error"] == "ImportError: No module named 'their_pkg'"
    assert rows["append-only"]["status"] == "ok" and rows["append-only"]["family"] == "python-leaks"
    assert "fixer plugin 'broken'" in out.err
    list_fixers()
    text = capsys.readouterr().out.splitlines()
    assert any(
        line.startswith("broken ") and line.endswith("broken: ImportError: No module named 'their_pkg'")
        for line in text
    )
    assert any(line.startswith("python-leaks") and "append-only" in line for line in text)
