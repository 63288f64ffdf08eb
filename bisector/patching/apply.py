"""Applying patches: writing files atomically with backups. A file is
written only when it is unchanged since it was read (hash), inside the project root once every
symlink is followed, and writable; otherwise nothing is written."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from bisector.common.errors import UserError
from bisector.common.interrupts import deferred
from bisector.common.marks import RUN_DIR, mark
from bisector.common.project import project_root  # noqa: F401 - re-exported: apply's callers name it here
from bisector.patching.diff import Patch, digest


def _inside(path: str | Path, root: str | Path, what: str = "") -> Path:
    """path's real location (every symlink, at any level, followed), refused unless it is inside
    root's real location."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    try:
        real.relative_to(real_root)
    except ValueError:
        via = "" if Path(os.path.abspath(path)) == real else f" (through a symlink, it is {real})"
        label = f"{what} {path}" if what else str(path)
        raise UserError(
            f"refusing to write {label}: it is outside the project root {real_root}{via}; nothing was written"
        ) from None
    return real


def _read_only(path: Path) -> bool:
    # The owner's write bit, not os.access: as root os.access says yes to every file.
    return path.exists() and not (path.stat().st_mode & stat.S_IWUSR)


def check_writable(path: str | Path, root: str | Path, what: str = "", force: bool = False) -> None:
    """Refuse, before any work, a file --apply could only write outside the project root, or a
    read-only one (unless force)."""
    real = _inside(path, root, what)
    if _read_only(real) and not force:
        label = f"{what} {path}" if what else str(path)
        raise UserError(
            f"refusing to write {label}: it is read-only; make it writable or pass --force. Nothing was written"
        )


def apply(
    patches: Iterable[Patch], root: str | Path, force: bool = False, written: list[str] | None = None
) -> list[str]:
    """Write every changed patch, or none: each file must be unchanged since it was read, lie
    inside root once every symlink is followed, and be writable (read-only only with force).
    Writes are atomic (temp file, rename); backups go to root/.bisector/backups/. written, when
    given, gets each file as soon as it is written (an interrupted apply still says what it did)."""
    root = Path(os.path.realpath(root))
    todo = [p for p in patches if p.changed]
    targets = {}
    for p in todo:
        target = _inside(p.path, root)
        targets[p.path] = target
        # Bytes, not text: a file whose line endings or encoding changed since is changed too.
        current = target.read_bytes() if target.exists() else None
        if (current is None) != (p.before is None) or (current is not None and digest(current) != p.before_hash):
            raise UserError(
                f"refusing to write {p.rel}: it changed since bisector read it; run fix again. Nothing was written"
            ) from None
        if _read_only(target) and not force:
            raise UserError(
                f"refusing to write {p.rel}: it is read-only; make it writable or pass --force. Nothing was written"
            )
    backups = root / ".bisector" / "backups" / time.strftime("%Y%m%d-%H%M%S")
    if todo:
        _inside(backups, root)  # a .bisector linked elsewhere would carry the backups outside
        mark(root / ".bisector", RUN_DIR)  # the backups are bisector's: `clean --backups` may remove them
    written = written if written is not None else []
    for p in todo:
        target = targets[p.path]
        if target.exists():
            keep = backups / target.relative_to(root)
            keep.parent.mkdir(parents=True, exist_ok=True)
            keep.write_bytes(target.read_bytes())
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.bisector-tmp")
        tmp.write_bytes(p.after_bytes)  # the file's own endings, BOM and encoding outside the edit
        if target.exists():
            os.chmod(tmp, target.stat().st_mode)
        with deferred():  # Ctrl-C here would leave the file written but not reported as written
            os.replace(tmp, target)
            written.append(p.rel)
    return written
