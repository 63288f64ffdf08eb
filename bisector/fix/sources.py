"""The user's files a fix may edit, and the shadow copies its candidates are measured in.

Source-editing fixers read the model file and the user's own modules beside it; a candidate's
edits go into a copy of the model's folder (its package, if it is in one), never into the user's
files: those are written only by `--apply`, from the patch.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bisector.common.project import project_root
from bisector.common.source_text import SourceError, encode_edit, read_source
from bisector.model.spec import ModelSpec

MAX_SOURCE_BYTES = 400_000


def user_sources(model: ModelSpec) -> dict[str, str]:
    """The model file and the user's own modules it imports (beside it, transitively): what
    source-editing fixers may change. Installed packages are never among them."""

    folder = Path(model.path).resolve().parent
    todo = [Path(model.path).resolve()]
    out: dict[str, str] = {}
    while todo:
        f = todo.pop()
        if str(f) in out or not f.is_file():
            continue
        try:
            if f.stat().st_size > MAX_SOURCE_BYTES:
                continue
            text = read_source(f)  # as Python reads it: its encoding, no BOM, "\n" endings
            tree = ast.parse(text)
        except (OSError, SourceError, SyntaxError):
            continue
        out[str(f)] = text
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]  # absolute, or relative to the model's folder: both resolved below
            for name in names:
                parts = name.split(".")
                for candidate in (folder.joinpath(*parts).with_suffix(".py"), folder.joinpath(*parts, "__init__.py")):
                    if candidate.is_file():
                        todo.append(candidate.resolve())
    return out


def registration_site(model: ModelSpec, region: str) -> str:
    """Where the user's code registers a hook on this region (`self.proj.register_forward_hook(...)`
    for region `proj`), as file:line relative to the model's folder; "" when none. A culprit whose
    own code is torch's (a Linear) leaks through a hook its parent registered there."""

    if not region:
        return ""

    last = region.split(".")[-1]
    folder = project_root(model.path)
    for path, text in user_sources(model).items():
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and "hook" in node.func.attr
                and node.func.attr.startswith("register_")
            ):
                owner = ast.unparse(node.func.value)
                if owner.split(".")[-1].split("[")[0] == last or owner.endswith(f"[{last}]"):
                    try:
                        rel = Path(path).resolve().relative_to(folder)
                    except ValueError:
                        rel = Path(path).name
                    return f"{rel}:{node.lineno}"
    return ""


def shadow_copy(model: ModelSpec, edits: Iterable[Any], root: Path) -> ModelSpec:
    """A copy of the model's folder (its package, if it is in one) with the edits applied; the
    model spec pointing into it. The user's files stay as they are."""
    src = Path(model.path).resolve().parent
    top = src
    while (top / "__init__.py").exists() and (top.parent / "__init__.py").exists():
        top = top.parent
    if (top / "__init__.py").exists():
        top = top.parent
    edits = list(edits)
    key = hashlib.sha256(repr(sorted((e.path, e.after) for e in edits)).encode()).hexdigest()[:12]
    dest_root = root / key
    dest = dest_root / src.relative_to(top) if src != top else dest_root
    if not dest_root.exists():
        tmp = root / f"{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        for f in src.rglob("*.py") if src != top else top.glob("*.py"):
            if any(part.startswith(".") or part == "__pycache__" for part in f.relative_to(top).parts):
                continue
            target = tmp / f.relative_to(top)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        for e in edits:
            target = tmp / Path(e.path).resolve().relative_to(top)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encode_edit(e.path, e.before, e.after))  # the user's endings and encoding
        try:
            os.replace(tmp, dest_root)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another thread made the same copy
    return replace(model, path=str(dest / Path(model.path).name))
