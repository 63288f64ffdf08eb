"""The user's project: the folder bisector may read and, when asked, write in."""

from __future__ import annotations

import os
from pathlib import Path


def project_root(start: str | Path) -> Path:
    """The nearest folder above start with a pyproject.toml or .git; else start's folder.
    start is taken as the user gave it: symlinks are not followed, so a model file linked in
    from elsewhere still belongs to the project it was named in (apply then refuses to write
    through the link)."""
    p = Path(os.path.abspath(Path(start).expanduser()))
    p = p if p.is_dir() else p.parent
    for folder in [p, *p.parents]:
        if (folder / "pyproject.toml").exists() or (folder / ".git").exists():
            return folder
    return p
