"""Who owns the Python objects a traced probe's calls left alive: by retention path, else by allocation site.

Runs in the child of a traced probe (ProbeOptions.owners), over the repeat span that owners.py
already brackets. The objects still alive at the span's end that were not alive at its start are
walked up to a named container (probe/retention.py's survey and walk: a module attribute, a
global, a closure, a hook dict, another package's registry). The first that holds an object
decides its owner: the model's containers are the model's, another package's module global is that
package's. An object no Python container holds (kept by an extension's C++ state, as torch's
TorchScript exporter keeps the parameter wrappers of a scripted module, pytorch/pytorch#82532)
is owned where it was allocated: tracemalloc's traceback for it, its innermost frame outside the
standard library (owners.Classifier).

CPython 3.11's ``tracemalloc.get_object_traceback`` misses objects with a pre-header (instances
of classes with a managed ``__dict__``, torch.Tensor among them: fixed in 3.12), so there the
trace is looked up at the block's real start through ``_PyTraceMalloc_GetTraceback``.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

MAX_OBJECTS = 400  # new objects whose owner is looked up (the rest are taken to split alike)
TOP_SITES = 3
_MANAGED_DICT = 1 << 4  # Py_TPFLAGS_MANAGED_DICT in CPython 3.11


def object_site(obj: Any) -> list[tuple[str, int]] | None:
    """Where tracemalloc saw ``obj`` allocated, innermost frame first; None when it was not traced."""
    import tracemalloc

    tb = tracemalloc.get_object_traceback(obj)
    if tb is not None:
        return [(f.filename, f.lineno) for f in reversed(list(tb))]
    if sys.version_info[:2] != (3, 11) or not gc.is_tracked(obj) or not type(obj).__flags__ & _MANAGED_DICT:
        return None
    return _preheader_site(obj)


def _preheader_site(obj: Any) -> list[tuple[str, int]] | None:
    """3.11 only: the GC header and the two-word pre-header come before the object (see the
    module docstring); the traceback is kept as ((filename, lineno), ...) oldest frame last."""
    import ctypes

    try:
        get = ctypes.pythonapi._PyTraceMalloc_GetTraceback
    except AttributeError:
        return None
    get.restype = ctypes.py_object
    get.argtypes = [ctypes.c_uint, ctypes.c_size_t]
    word = ctypes.sizeof(ctypes.c_void_p)
    frames = get(0, id(obj) - 4 * word)  # PyGC_Head (2 words) + pre-header (dict, weakrefs)
    return [(str(f), int(n)) for f, n in frames] if frames else None


def owners_of_objects(
    new: list[Any],
    held: dict[int, str],
    hold_group: Callable[[str], str],
    classify: Callable[[Iterable[tuple[str, int]]], tuple[str, str]],
    calls: int,
) -> dict[str, Any]:
    """Objects per call by owner group, and where they were held or allocated.

    new: the tops of the span's new objects (those no other new object refers to); held: id of a
    top -> the retention path that holds it; hold_group: a path's owner group; classify: frames ->
    (group, "file:line") (owners.Classifier.owner)."""
    calls = max(1, calls)
    looked = new[:MAX_OBJECTS]
    scale = len(new) / len(looked) if looked else 0.0
    counts: dict[str, float] = {}
    where: dict[str, dict[str, float]] = {}
    for o in looked:
        path = held.get(id(o))
        if path is not None:
            group, at = hold_group(path), f"held by {path}"
        else:
            frames = object_site(o)
            group, at = classify(frames) if frames else ("other", "?")
            at = f"{type(o).__qualname__} allocated at {at}, held by no Python container"
        counts[group] = counts.get(group, 0.0) + scale
        where.setdefault(group, {})[at] = where.get(group, {}).get(at, 0.0) + scale
    return {
        "new": len(new),
        "per_call": {g: round(n / calls, 2) for g, n in counts.items()},
        "sites": {
            g: [{"where": w, "objects": round(n / calls, 2)} for w, n in sorted(s.items(), key=lambda kv: -kv[1])][
                :TOP_SITES
            ]
            for g, s in where.items()
        },
    }


class ObjectOwners:
    """Brackets one span of a traced probe: ids and a retention survey at its start, the new
    objects' owners at its end. modules: () -> (user modules, library modules), as a retention
    probe surveys them."""

    def __init__(
        self,
        model: Any,
        modules: Callable[[], tuple[list[Any], list[Any]]],
        classifier: Any,
    ) -> None:
        self.model = model
        self.modules = modules
        self.classifier = classifier
        self.start: frozenset[int] = frozenset()
        self.cost_s = 0.0
        self.entries = 0

    def begin(self) -> None:
        t0 = time.perf_counter()
        gc.collect()
        self.entries = model_entries(self.model, self.modules()[0])
        self.start = frozenset(id(o) for o in gc.get_objects())
        self.cost_s += time.perf_counter() - t0

    def end(self, calls: int) -> dict[str, Any]:
        from bisector.probe.retention import new_objects, walk
        from bisector.probe.survey import survey

        t0 = time.perf_counter()
        gc.collect()
        # The new objects first: the survey below makes objects of its own.
        new = new_objects(self.start, {id(self), id(self.start)})
        tops = _tops(new)
        user, libs = self.modules()
        after = survey(self.model, user, libs, keep_objects=True)
        skip = {id(self), id(self.start), id(after), id(after.held), id(after.objects), id(after.ids)}
        skip |= {id(user), id(libs)} | {id(h) for h in after.held.values()}
        held: dict[int, str] = {}
        walk(new, after, skip | {id(new), id(tops), id(held)}, into=held)
        out = owners_of_objects(tops, held, self._hold_group(after), self.classifier.owner, calls)
        # Entries the model's own containers gained over the span: the model keeps what the calls
        # made, whoever allocated it (a hook appending each export's traced output to a module-level
        # list keeps tensors torch made, which the walk may not reach through the exporter's wrappers).
        out["model_entries_per_call"] = round((model_entries(self.model, user) - self.entries) / max(1, calls), 2)
        self.cost_s += time.perf_counter() - t0
        out["cost_s"] = round(self.cost_s, 3)
        return out

    def _hold_group(self, survey: Any) -> Callable[[str], str]:
        """A retention path's owner: the file of the module, class or function that holds it."""
        rows = dict(survey.held)

        def group(path: str) -> str:
            row = rows.get(path)
            module = row.module if row is not None else path.rsplit(".", 1)[0]
            file = (row.file if row is not None else "") or getattr(sys.modules.get(module), "__file__", None) or ""
            if row is not None and not file and row.root != "registry":
                return "model"  # an attribute of the model's own tree
            return (self.classifier.group(file) if file else None) or "model"

        return group


def model_entries(model: Any, user_modules: Iterable[Any]) -> int:
    """Entries in the containers the model's code owns: its modules' globals and each submodule's
    attributes (lists, dicts, sets, deques; hook and parameter dicts among them)."""
    from collections import deque

    kinds = (list, dict, set, deque)
    total = 0
    spaces: list[dict[str, Any]] = []
    for mod in user_modules:
        spaces.append(getattr(mod, "__dict__", {}))
    modules = getattr(model, "modules", None)
    if callable(modules):
        try:
            spaces += [getattr(m, "__dict__", {}) for m in modules()]
        except Exception:  # noqa: BLE001 - a model whose modules() cannot be walked: its globals only
            pass
    for space in spaces:
        for value in list(space.values()):
            if isinstance(value, kinds) and value is not space:
                total += len(value)
    return total


def _tops(new: list[Any]) -> list[Any]:
    """The new objects no other new object refers to: what something outside the span holds."""
    ids = {id(o) for o in new}
    below: set[int] = set()
    for o in new:
        for c in gc.get_referents(o):
            if id(c) in ids and c is not o:
                below.add(id(c))
    return [o for o in new if id(o) not in below]
