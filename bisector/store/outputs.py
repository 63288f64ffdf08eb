"""The folders a command will write into, checked before any probe runs.

A run directory, a --report or --bundle folder, or an --out that is a file, lies under a file, or
cannot be written (a read-only folder or file system) used to fail with an internal error once
every probe had run, and a `find --report FILE` printed no verdict at all. These are the user's
to fix: one line, exit 2, in milliseconds.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bisector.common.errors import UserError


def check_output_dir(path: str | Path, what: str) -> None:
    """Refuse a folder bisector could not create or write in. Nothing is left behind: where the
    folder does not exist yet, the check writes (and removes) a temporary folder in the nearest
    one that does, the place it would be created."""
    given = Path(path).expanduser()
    where = given
    while not os.path.lexists(where):
        if where.parent == where:
            break
        where = where.parent
    if where.exists() and not where.is_dir():
        tail = "" if where == given else f" (it would go under {where}, which is a file)"
        raise UserError(f"{what} {path} is not a folder{tail}; give a folder")
    if not where.exists():  # a dangling symlink on the way
        raise UserError(f"{what} {path}: {where} is a link to nothing; give a folder")
    # Write access as the kernel sees it: os.access says yes to root on a read-only mount, and a
    # file system may refuse what the mode bits allow.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".bisector-write-check-", dir=where))
    except OSError as exc:
        place = "" if where == given else f" (in {where})"
        raise UserError(f"cannot write {what} {path}{place}: {exc.strerror or exc}; give a writable folder") from None


def check_outputs(*folders: tuple[str | Path | None, str]) -> None:
    """check_output_dir for each (folder, what) given; None is skipped (not asked for)."""
    for folder, what in folders:
        if folder is not None and str(folder) != "":
            check_output_dir(folder, what)
