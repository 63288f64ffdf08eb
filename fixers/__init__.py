"""The fixers: one a module, registered here and through the ``bisector.fixers`` entry-point
group, so other packages can add their own (an entry point names a Fixer instance or class).

The repository keeps them in ``fixers/``; they install as ``bisector.fixers``, so a folder named
``fixers`` on sys.path (a user's project, which the probe puts first) cannot shadow them. They
import nothing from bisector but this package.
"""

from __future__ import annotations

import os
from pathlib import Path

from bisector.fixers.base import Candidate, Example, Fixer, FixTarget, SourceEdit, addresses

FOLDER = Path(os.path.abspath(__file__)).parent  # bisector's result cache hashes it with its own code

BUILTIN = (
    "bisector.fixers.python_leaks",
    "bisector.fixers.symbolic_functions",
    "bisector.fixers.exporter_switch",
    "bisector.fixers.ort_options",
    "bisector.fixers.round_sizes",
    "bisector.fixers.onnxsim_fold",
    "bisector.fixers.bounded_axes",
    "bisector.fixers.export_options",
    "bisector.fixers.missing_symbolic",
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
