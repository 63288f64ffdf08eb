"""Folders bisector made, and the proof that it made them.

Anything that deletes (``bisector clean``, capture eviction, repair replacing its old patches)
removes only what bisector can prove it wrote: a known layout under a folder that carries
bisector's mark, written when bisector created the folder. A folder a user points --run-dir,
BISECTOR_RUN_DIR, BISECTOR_CACHE or --out at is only ever listed as "not bisector's".

The mark is a small JSON file (``.bisector-owned``) naming the tool and what the folder is, so a
run directory is never taken for a cache or a repair output. It is a regular file: a symlink
named like it proves nothing (anyone can link to anything). Run directories of bisector before
the mark existed are recognised by the ``.gitignore`` bisector wrote into them, byte for byte,
and get the mark from then on.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

MARK = ".bisector-owned"
RUN_DIR, CACHE, REPAIR_OUT, BUNDLE = "run-dir", "control-cache", "repair-output", "bundle"
KINDS = (RUN_DIR, CACHE, REPAIR_OUT, BUNDLE)
# What bisector writes into every run directory it makes (keeps the run data out of git).
RUN_DIR_GITIGNORE = "# bisector's run data: measurements and recorded inputs\n*\n"


def real_dir(path: Path) -> bool:
    """A directory that is not a symlink (nothing to delete through a link into somewhere else)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _regular_text(path: Path, limit: int = 4096) -> str | None:
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        with open(path, encoding="utf-8") as f:
            return f.read(limit)
    except (OSError, UnicodeDecodeError):
        return None


def mark(folder: Path, kind: str) -> None:
    """Create folder (parents too) and mark it as bisector's kind of folder. A folder that already
    holds something without the mark gets none: bisector did not make what is there, so it can
    prove nothing about it (an empty one has nothing to lose). Failing to write the mark is no
    error: the folder is then simply never cleaned."""
    if kind not in KINDS:
        raise ValueError(f"unknown folder kind {kind!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not real_dir(folder) or (any(folder.iterdir()) and not _legacy(folder, kind)):
        return
    if kind == RUN_DIR and not (folder / ".gitignore").exists():
        try:
            (folder / ".gitignore").write_text(RUN_DIR_GITIGNORE)
        except OSError:
            pass
    if marked_kind(folder) is None:
        try:
            with open(folder / MARK, "x", encoding="utf-8") as f:  # never through an existing name
                json.dump({"tool": "bisector", "kind": kind}, f)
                f.write("\n")
        except OSError:
            pass


def marked_kind(folder: Path) -> str | None:
    """The kind of folder bisector marked this one as, or None."""
    if not real_dir(folder):
        return None
    text = _regular_text(Path(folder) / MARK)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("tool") != "bisector" or data.get("kind") not in KINDS:
        return None
    return str(data["kind"])


def _legacy(folder: Path, kind: str) -> bool:
    """A run directory made before the mark existed: the .gitignore bisector wrote, unchanged."""
    return kind == RUN_DIR and real_dir(folder) and _regular_text(folder / ".gitignore") == RUN_DIR_GITIGNORE


def owned(folder: Path, kind: str) -> bool:
    """Whether bisector can prove it made folder as this kind of folder."""
    return marked_kind(Path(folder)) == kind or _legacy(Path(folder), kind)
