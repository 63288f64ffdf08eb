"""Retention paths in the parent: what a retention probe found (probe/retention.py), per culprit,
with the source lines that create and grow each container.

``paths(data, ...)`` turns the probe's per-span rows into the culprit's ``retention`` figure (the
contract the fixers read: root, path, container, growth per call and per new shape, keys, and
``defined_at``/``mutated_at`` as ``file:line`` relative to the project). ``sites`` reads the
user's files with libcst (judge/retention_sites.py, imported only when a row needs its lines):
the assignment that defines a container (``self.x = ...`` in ``__init__``, a module-level
``NAME = ...``, a class-body assignment, ``register_buffer``, an ``@lru_cache`` decorator, the
handler's construction) and the statements that grow it (``.append``/``.extend``/``.add``/
``[k] = ``/``setdefault``, ``x = torch.cat([x, ...])``, ``register_forward_hook(``, the calls of a
cached function, logging calls).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bisector.judge.owners import project_roots

if TYPE_CHECKING:
    from bisector.judge.retention_sites import Site

TOP = 5
MAX_FILES = 60  # project files read for sites
MAX_SITES = 6  # mutation lines kept per path


def paths(data: Mapping[str, Any] | None, model_path: str, project: str | None = None) -> tuple[dict[str, Any], ...]:
    """The culprit's retention figure from a retention probe's result (its meta["retention"]),
    biggest first, at most TOP; () when the probe found nothing that grows."""
    if not data:
        return ()
    repeat = data.get("repeat") or {}
    novel = data.get("novel") or {}
    per_call = {r["path"]: r for r in repeat.get("rows", [])}
    per_shape = {r["path"]: r for r in novel.get("rows", [])}
    base = project or _project_root(model_path)
    out = []
    for path in list(dict.fromkeys([*per_call, *per_shape])):
        rc, rn = per_call.get(path), per_shape.get(path)
        row = rc or rn
        assert row is not None
        if row["container"] == "Tensor" and rc is None:
            # A tensor attribute that is only larger after larger inputs is the last input's
            # size (self.last = y), not a bank that grows.
            continue
        call_rate = float(rc["entries_per_call"]) if rc else 0.0
        shape_rate = max(0.0, float(rn["entries_per_call"]) - call_rate) if rn else 0.0
        if call_rate <= 0 and shape_rate <= 0:
            continue
        out.append(
            {
                "root": row["root"],
                "path": path,
                "container": row["container"],
                "entries_per_call": round(call_rate, 3),
                "entries_per_new_shape": round(shape_rate, 3),
                "bytes_per_call": (rc or {}).get("bytes_per_call"),
                "keys": (rc or {}).get("keys") or (rn or {}).get("keys") or "",
                "attr": row.get("attr", ""),
                "module": row.get("module", ""),
                "qualname": row.get("qualname", ""),
                "_file": row.get("file", ""),
            }
        )
    out.sort(key=lambda r: (-(r["bytes_per_call"] or 0.0), -r["entries_per_call"], -r["entries_per_new_shape"]))
    rows = []
    for r in out[:TOP]:
        file = r.pop("_file")
        mention = r["module"].rsplit(".", 1)[-1] if r["root"] == "global" else ""
        defined, mutated = sites(r, _files(file, model_path, base, r["attr"], mention), base)
        rows.append({**r, "defined_at": defined, "mutated_at": list(mutated)})
    return tuple(rows)


def _project_root(model_path: str) -> str:
    return project_roots(model_path)[-1]


def _under(path: str, root: str) -> bool:
    path, root = os.path.abspath(path), os.path.abspath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _files(file: str, model_path: str, base: str, attr: str, module: str = "") -> list[str]:
    """The files to read: the container owner's file, the model's, then the model folder's other
    files that mention the name (where a hook is registered or a global is grown); a global's,
    only those that also name its module (another file's global of the same name is not it)."""
    out: list[str] = []
    for f in (file, model_path):
        if f and f.endswith(".py") and os.path.isfile(f) and _under(f, base) and f not in out:
            out.append(os.path.abspath(f))
    folder = Path(model_path).resolve().parent
    for f in sorted(folder.glob("*.py"))[:MAX_FILES]:
        name = str(f)
        if name in out:
            continue
        try:
            text = f.read_text(errors="replace")
            if attr and attr in text and (not module or module in text):
                out.append(name)
        except OSError:
            pass
    return out


def sites(row: Mapping[str, Any], files: Sequence[str], base: str) -> tuple[str, tuple[str, ...]]:
    """(defined_at, mutated_at) of a retention row, as "rel/file.py:line"."""
    from bisector.judge.retention_sites import find_sites  # noqa: PLC0415 - libcst (~0.4 s) only when needed

    found: list[Site] = []
    for f in files:
        try:
            source = Path(f).read_text()
        except (OSError, UnicodeDecodeError):
            continue
        found += find_sites(source, row, rel(f, base))
    defined = [s for s in found if s.kind == "defined"]
    mutated = [s for s in found if s.kind == "mutated"]
    if row["root"] == "hooks":
        # Registrations on the module the path names (self.conv1.register_forward_hook) first.
        owner = str(row["path"]).rsplit(".", 2)[-2] if str(row["path"]).count(".") >= 1 else ""
        mine = [s for s in mutated if s.receiver == owner]
        mutated = mine or mutated
    qual = str(row.get("qualname") or "").split(".")[0]
    if qual and row["root"] in ("module-attr", "class-attr"):
        inside = [s for s in defined if s.scope.split(".")[0] == qual]
        defined = inside or defined
        init = [s for s in defined if s.scope.endswith("__init__")]
        defined = init or defined
    where = f"{defined[0].file}:{defined[0].line}" if defined else ""
    lines = tuple(dict.fromkeys(f"{s.file}:{s.line}" for s in mutated))[:MAX_SITES]
    return where, lines


def rel(path: str, base: str) -> str:
    return os.path.relpath(path, base) if _under(path, base) else os.path.basename(path)


# -- how it reads ------------------------------------------------------------------------------------------


def describe(row: Mapping[str, Any], per: str = "call") -> str:
    """One line: 'held by encoder.conv1._forward_hooks (OrderedDict, +1 entry per call, keys are
    input lengths), registered at hook_leak.py:22'."""
    growth = []
    if row.get("entries_per_call"):
        growth.append(f"+{_n(row['entries_per_call'])} {_unit(row, row['entries_per_call'])} per {per}")
    if row.get("entries_per_new_shape"):
        n = row["entries_per_new_shape"]
        growth.append(f"+{_n(n)} {_unit(row, n)} per new shape")
    if row.get("keys"):
        growth.append(f"keys are {row['keys']}")
    text = f"held by {row['path']} ({', '.join([row['container'], *growth])})"
    mutated = list(row.get("mutated_at") or [])
    verb = "registered" if row.get("root") == "hooks" else "grown"
    if mutated:
        text += f", {verb} at {', '.join(mutated[:2])}"
    if row.get("defined_at") and row.get("root") != "hooks":
        text += f", defined at {row['defined_at']}"
    return text


def _n(x: float) -> str:
    return f"{x:g}" if x >= 10 or float(x).is_integer() else f"{x:.2g}"


def _unit(row: Mapping[str, Any], n: float) -> str:
    one = n == 1
    if row.get("container") == "Tensor":
        return "row" if one else "rows"
    if row.get("root") == "hooks":
        return "hook" if one else "hooks"
    return "entry" if one else "entries"


def hint(rows: Iterable[Mapping[str, Any]], per: str = "call") -> str | None:
    """find's hint for a culprit whose retention path is known: the container and the line."""
    rows = list(rows)
    if not rows:
        return None
    top = rows[0]
    if top.get("container") == "Tensor":
        what = "a tensor grown by concatenation: keep its last N rows after each one"
    else:
        what = {
            "hooks": "hooks registered on every call pile up: register once (or keep the handle and remove it)",
            "lru-cache": "an unbounded lru_cache fills: give it a finite maxsize",
            "logging": "a logging handler keeps every record and what it refers to: bound or flush it",
        }.get(str(top.get("root")), "a container that only grows: bound it")
    return f"{describe(top, per)}: {what}"
