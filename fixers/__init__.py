"""The fixers: one a module, registered here and through the ``bisector.fixers`` entry-point
group, so other packages can add their own (an entry point names a Fixer instance or class).

The repository keeps them in ``fixers/``; they install as ``bisector.fixers``, so a folder named
``fixers`` on sys.path (a user's project, which the probe puts first) cannot shadow them. They
import nothing from bisector but this package.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bisector.fixers.base import Candidate, Example, Fixer, FixTarget, SourceEdit, addresses, family_of

FOLDER = Path(os.path.abspath(__file__)).parent  # bisector's result cache hashes it with its own code

BUILTIN = (
    "bisector.fixers.append_only",
    "bisector.fixers.accumulated_history",
    "bisector.fixers.shape_cache",
    "bisector.fixers.collecting_hooks",
    "bisector.fixers.symbolic_functions",
    "bisector.fixers.exporter_switch",
    "bisector.fixers.ort_options",
    "bisector.fixers.round_sizes",
    "bisector.fixers.onnxsim_fold",
    "bisector.fixers.bounded_axes",
    "bisector.fixers.export_options",
    "bisector.fixers.missing_symbolic",
    "bisector.fixers.bounded_memo",
    "bisector.fixers.finite_lru_cache",
    "bisector.fixers.bounded_containers",
    "bisector.fixers.tensor_bank",
    "bisector.fixers.hook_once",
    "bisector.fixers.bounded_log_records",
    "bisector.fixers.export_in_child",
    "bisector.fixers.eager_not_scripted",
    "bisector.fixers.warning_registry",
)
ENTRY_POINT_GROUP = "bisector.fixers"


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point of the group that gave no fixer: it raised on load, or named something else."""

    name: str  # the entry point's name
    value: str  # what it points at: "package.module:FIXER"
    error: str  # "ImportError: No module named 'package'"


@dataclass(frozen=True)
class Registry:
    fixers: tuple[Fixer, ...]
    broken: tuple[BrokenPlugin, ...] = ()


# Entry points already reported: one warning line each per process, however often fixers load.
_WARNED: set[tuple[str, str]] = set()


def load() -> Registry:
    """Built-in fixers, then those other packages register. A plugin that fails to load is
    skipped with one warning line on stderr, and listed as broken; the rest load."""
    import importlib

    out: list[Fixer] = [importlib.import_module(name).FIXER for name in BUILTIN]
    # Our own entry points name the built-ins again (and an older install's may name a family):
    # those names are taken, never loaded twice.
    taken = set(names(out))
    broken: list[BrokenPlugin] = []
    for ep in _entry_points():
        if ep.name in taken:
            continue
        value = str(getattr(ep, "value", ""))
        try:
            obj = ep.load()
            fixer = obj() if isinstance(obj, type) else obj
            if not isinstance(fixer, Fixer):
                raise TypeError(
                    f"{value or ep.name} is not a Fixer (it needs name, description, stages, kinds, "
                    "examples and propose)"
                )
            if fixer.name in taken:
                raise ValueError(f"a fixer named {fixer.name!r} is already registered")
        except Exception as e:  # noqa: BLE001 - one broken plugin never takes the tool down
            plugin = BrokenPlugin(ep.name, value, _one_line(e))
            broken.append(plugin)
            _warn(plugin)
            continue
        out.append(fixer)
        taken.update(names([fixer]))
    return Registry(tuple(out), tuple(broken))


def all_fixers() -> list[Fixer]:
    """Every fixer that loads: built-ins first (see load)."""
    return list(load().fixers)


def names(fixers: Iterable[Fixer]) -> list[str]:
    """What `--fixer` accepts: each fixer's name, then each family's (`python-leaks`)."""
    fixers = list(fixers)
    families = [family_of(f) for f in fixers if family_of(f)]
    return list(dict.fromkeys([f.name for f in fixers] + families))


def select(fixers: Iterable[Fixer], only: Iterable[str]) -> list[Fixer]:
    """The fixers only names, a family's name standing for each of its members; all of them
    when only is empty."""
    wanted = set(only)
    return [f for f in fixers if not wanted or f.name in wanted or family_of(f) in wanted]


def _entry_points() -> list:
    from importlib import metadata

    try:
        return list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except TypeError:  # Python < 3.10 signature
        return list(metadata.entry_points().get(ENTRY_POINT_GROUP, []))  # type: ignore[attr-defined]


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _warn(plugin: BrokenPlugin) -> None:
    key = (plugin.name, plugin.value)
    if key in _WARNED:
        return
    _WARNED.add(key)
    at = f" ({plugin.value})" if plugin.value else ""
    sys.stderr.write(f"bisector: warning: fixer plugin {plugin.name!r}{at} failed to load, skipped: {plugin.error}\n")


__all__ = [
    "BUILTIN",
    "BrokenPlugin",
    "Candidate",
    "Example",
    "Fixer",
    "FixTarget",
    "Registry",
    "SourceEdit",
    "addresses",
    "all_fixers",
    "family_of",
    "load",
    "names",
    "select",
]
