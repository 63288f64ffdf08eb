"""Who keeps the growth: the model's code, the libraries it is built from, or the toolchain.

A traced probe (tracemalloc, started once warm-up is over) compares snapshots across repeated
calls and groups the Python memory that grew by the file that allocated it:

- ``model``: files of the user's project (the model's folder or project root), and any other
  code outside site-packages and the standard library;
- ``libraries``: third-party packages the model is built from (transformers, timm, ...): not the
  user's file, but part of the model's code;
- ``toolchain``: torch, onnx, onnxscript, onnx_ir, onnxruntime, onnxsim (and sympy, which torch's
  exporter drives): what ``torch.onnx.export`` or ONNX Runtime keep of their own accord;
- ``other``: the standard library with no other frame recorded, bisector's own harness;

and **native** bytes: the C heap's growth that no traced Python allocation explains (mallinfo2
growth minus the traced growth of blocks over 512 bytes, the ones pymalloc hands to malloc).

The innermost frame that is not the standard library decides (a deque appended to in the model's
forward belongs to the model, not to collections/__init__.py). Only this module's pure functions
run in the parent; ``summarize`` runs in the child on tracemalloc's StatisticDiff objects.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Iterable, Mapping
from typing import Any

from bisector.fixers import FOLDER as fixers_folder

MODEL, LIBRARIES, TOOLCHAIN, OTHER, NATIVE = "model", "libraries", "toolchain", "other", "native"
GROUPS = (MODEL, LIBRARIES, TOOLCHAIN, OTHER)
# Top-level packages whose growth is the toolchain's, never the model's.
TOOLCHAIN_PACKAGES = frozenset(
    {"torch", "torchgen", "functorch", "onnx", "onnxscript", "onnx_ir", "onnxruntime", "onnxsim", "sympy", "mpmath"}
)
PYMALLOC_LIMIT = 512  # larger blocks come from malloc, and so are in the heap meter's count
TOP_SITES = 3


class Classifier:
    """Maps a source file to its owner group. roots: the model's project folders."""

    def __init__(self, roots: Iterable[str], own: Iterable[str] = ()) -> None:
        self.roots = tuple(_norm(r) for r in roots if r)
        self.own = tuple(_norm(o) for o in own if o)
        paths = sysconfig.get_paths()
        self.stdlib = tuple({_norm(paths["stdlib"]), _norm(paths.get("platstdlib", paths["stdlib"]))})
        self._cache: dict[str, str | None] = {}

    def group(self, filename: str) -> str | None:
        """The owner group of a file, or None for a frame to look past (the standard library)."""
        hit = self._cache.get(filename, "")
        if hit != "":
            return hit
        out = self._group(filename)
        self._cache[filename] = out
        return out

    def _group(self, filename: str) -> str | None:
        if filename.startswith("<"):
            # torch.fx's generated forward ("<eval_with_key>.3") is torch's code; other synthetic
            # frames (<frozen importlib...>, <string>) say nothing of an owner.
            return TOOLCHAIN if filename.startswith("<eval_with_key") else None
        path = _norm(filename)
        # Installed packages first: a project's own virtual environment lives inside its folder.
        package = _site_package(path)
        if package is not None:
            if package == "bisector":
                return OTHER  # our own harness, installed
            return TOOLCHAIN if package in TOOLCHAIN_PACKAGES else LIBRARIES
        if any(_under(path, o) for o in self.own):
            return OTHER  # before the roots: the samples live in bisector's own repository
        if any(_under(path, r) for r in self.roots):
            return MODEL
        if any(_under(path, s) for s in self.stdlib):
            return None
        return MODEL  # user code outside the project folder and outside site-packages

    def owner(self, frames: Iterable[tuple[str, int]]) -> tuple[str, str]:
        """(group, "file:line") of a traceback given innermost frame first."""
        last = ("", 0)
        for filename, lineno in frames:
            last = (filename, lineno)
            g = self.group(filename)
            if g is not None:
                return g, f"{_short(filename)}:{lineno}"
        return OTHER, f"{_short(last[0])}:{last[1]}" if last[0] else "?"


def summarize(diffs: Iterable[Any], classifier: Classifier, calls: int, heap_growth: float) -> dict[str, Any]:
    """Growth per call by owner, from tracemalloc StatisticDiff objects (grouped by traceback)
    between two snapshots ``calls`` calls apart, and the heap meter's growth over the same calls."""
    calls = max(1, calls)
    totals = {g: 0.0 for g in GROUPS}
    sites: dict[str, dict[str, float]] = {g: {} for g in GROUPS}
    large = 0.0
    for st in diffs:
        if not st.size_diff:
            continue
        frames = [(f.filename, f.lineno) for f in reversed(list(st.traceback))]  # innermost first
        group, where = classifier.owner(frames)
        totals[group] += st.size_diff
        sites[group][where] = sites[group].get(where, 0.0) + st.size_diff
        # Blocks of this traceback are malloc'd when they are large: judged by the group's current
        # average size (a list resized in place grows with no new block: count_diff 0).
        count, size = getattr(st, "count", 0) or 0, getattr(st, "size", 0) or 0
        if count and size / count > PYMALLOC_LIMIT:
            large += st.size_diff
        elif not count and st.count_diff and st.size_diff / st.count_diff > PYMALLOC_LIMIT:
            large += st.size_diff
    native = heap_growth - large
    return {
        "calls": calls,
        "heap": round(heap_growth / calls),
        "groups": {g: round(v / calls) for g, v in totals.items()},
        NATIVE: round(native / calls),
        "python_malloc": round(large / calls),
        "sites": {
            g: [
                {"where": w, "bytes": round(b / calls)}
                for w, b in sorted(s.items(), key=lambda kv: -kv[1])[:TOP_SITES]
                if b > 0
            ]
            for g, s in sites.items()
        },
    }


# ---------------------------------------------------------------------------------------------
# Parent side: what the model owns


def native_share(owners: Mapping[str, Any], heap_rate: float | None = None) -> float:
    """Native bytes per call: heap growth that no traced Python allocation explains. heap_rate: the
    untraced probe's own heap growth per call, when known; it is the better figure (a median over
    every pass, no tracer in the process), so it replaces the traced probe's."""
    if heap_rate is None:
        return max(0.0, float(owners.get(NATIVE) or 0.0))
    return max(0.0, heap_rate - float(owners.get("python_malloc") or 0.0))


# The traced probe times one pass; the toolchain's own growth varies by a few percent between
# exports (a tiny GPT-2: ~401-411 KB), so native growth beside a large toolchain share is
# resolved to this fraction of it: below, it cannot be told from that variation.
NATIVE_TOLERANCE = 0.05


def model_share(owners: Mapping[str, Any], heap_rate: float | None = None, objects_theirs: bool = False) -> float:
    """Bytes per call the model's code owns: its files, its libraries, and native growth (which
    the region search then localises). Native growth is split as the native stacks split it, where
    they saw any (bisector/judge/native.py); else it is the model's once it clears the toolchain's own
    variation. objects_theirs: objects grew per call and toolchain_objects says they are the
    toolchain's: native bytes beside them are theirs."""
    groups = owners.get("groups") or {}
    python = max(0.0, float(groups.get(MODEL, 0.0)) + float(groups.get(LIBRARIES, 0.0)))
    if objects_theirs:
        return python  # the native bytes are the C++ state of the toolchain's own objects
    native = native_share(owners, heap_rate)
    split = native_split(owners)
    if split:
        return python + native * (split.get(MODEL, 0.0) + split.get(LIBRARIES, 0.0)) / sum(split.values())
    return python + (native if native > NATIVE_TOLERANCE * python_toolchain(owners) else 0.0)


def object_owners(owners: Mapping[str, Any]) -> tuple[float, float]:
    """(the model's, the toolchain's) new objects per call, as the traced probe owned them by
    retention path, else allocation site (probe/objects.py); (0, 0) when it did not look."""
    per_call = (owners.get("objects") or {}).get("per_call") or {}
    mine = float(per_call.get(MODEL) or 0.0) + float(per_call.get(LIBRARIES) or 0.0)
    return mine, float(per_call.get(TOOLCHAIN) or 0.0)


def toolchain_objects(owners: Mapping[str, Any]) -> bool:
    """The toolchain allocated and holds every new object the traced calls left (none is the
    model's). Said of objects that grow per call (the caller checks), what it keeps natively beside
    them (a scripted module's cloned parameters, pytorch/pytorch#82532) is its own too."""
    mine, theirs = object_owners(owners)
    grew = float((owners.get("objects") or {}).get("model_entries_per_call") or 0.0)
    return theirs > 0 and mine < 0.5 and grew < 0.5


def object_site(owners: Mapping[str, Any], group: str = TOOLCHAIN) -> str | None:
    """Where a group's grown objects were allocated or are held, as the traced probe said."""
    sites = ((owners.get("objects") or {}).get("sites") or {}).get(group) or []
    return sites[0]["where"] if sites else None


def toolchain_share(owners: Mapping[str, Any]) -> float:
    """Bytes per call the toolchain keeps: its Python files, and the native growth the stacks put in
    its libraries."""
    split = native_split(owners)
    native = native_share(owners) * split.get(TOOLCHAIN, 0.0) / sum(split.values()) if split else 0.0
    return python_toolchain(owners) + native


def python_toolchain(owners: Mapping[str, Any]) -> float:
    return max(0.0, float((owners.get("groups") or {}).get(TOOLCHAIN, 0.0)))


def native_split(owners: Mapping[str, Any]) -> dict[str, float]:
    """Native bytes per call the traced probe's native stacks attributed, by owner group (empty when
    they did not run, or saw none: malloc reached through dlsym is invisible to them)."""
    stacks = owners.get("native_stacks")
    out: dict[str, float] = {}
    for row in (stacks.get("sites") or []) if isinstance(stacks, Mapping) else []:
        if float(row.get("bytes") or 0) > 0:
            out[row["owner"]] = out.get(row["owner"], 0.0) + float(row["bytes"])
    return out


def top_site(owners: Mapping[str, Any], group: str) -> str | None:
    sites = (owners.get("sites") or {}).get(group) or []
    return sites[0]["where"] if sites else None


def project_roots(model_path: str) -> list[str]:
    """The model's folder, and the project root above it (the nearest pyproject.toml or .git)."""
    folder = os.path.dirname(os.path.abspath(model_path))
    roots = [folder]
    here = folder
    for _ in range(8):
        if os.path.exists(os.path.join(here, "pyproject.toml")) or os.path.exists(os.path.join(here, ".git")):
            if here != folder:
                roots.append(here)
            break
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return roots


def _norm(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _site_package(path: str) -> str | None:
    for marker in ("site-packages", "dist-packages"):
        key = os.sep + marker + os.sep
        i = path.rfind(key)
        if i >= 0:
            rest = path[i + len(key) :]
            top = rest.split(os.sep, 1)[0]
            return top[:-3] if top.endswith(".py") else top
    return None


def _short(filename: str) -> str:
    """A file as people name it: package-relative inside site-packages, else as given."""
    for marker in ("site-packages", "dist-packages"):
        key = os.sep + marker + os.sep
        i = filename.rfind(key)
        if i >= 0:
            return filename[i + len(key) :]
    return filename


def installed_own() -> list[str]:
    """bisector's own folders (its harness allocates too: sample arrays, snapshots)."""

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bisector/, above judge/
    return [here, str(fixers_folder)]
