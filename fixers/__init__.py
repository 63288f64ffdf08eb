"""The fixers: one a module, registered here and through the ``bisector.fixers`` entry-point
group, so other packages can add their own (an entry point names a Fixer instance or class)."""

from __future__ import annotations

from fixers.base import Candidate, Example, Fixer, FixTarget, SourceEdit, addresses

BUILTIN = (
    "fixers.python_leaks",
    "fixers.symbolic_functions",
    "fixers.exporter_switch",
    "fixers.ort_options",
    "fixers.round_sizes",
    "fixers.onnxsim_fold",
    "fixers.bounded_axes",
    "fixers.export_options",
    "fixers.missing_symbolic",
)
ENTRY_POINT_GROUP = "bisector.fixers"


def all_fixers() -> list[Fixer]:
    """Built-in fixers, then those other packages register (a broken plugin is skipped)."""
    import importlib
    from importlib import metadata

    out: list[Fixer] = [importlib.import_module(name).FIXER for name in BUILTIN]
    seen = {f.name for f in out}
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # Python < 3.10 signature
        eps = metadata.entry_points().get(ENTRY_POINT_GROUP, [])  # type: ignore[attr-defined]
    for ep in eps:
        try:
            obj = ep.load()
            fixer = obj() if isinstance(obj, type) else obj
        except Exception:  # noqa: BLE001 - one broken plugin never takes the tool down
            continue
        if isinstance(fixer, Fixer) and fixer.name not in seen:
            out.append(fixer)
            seen.add(fixer.name)
    return out


__all__ = ["Candidate", "Example", "Fixer", "FixTarget", "SourceEdit", "addresses", "all_fixers", "BUILTIN"]
