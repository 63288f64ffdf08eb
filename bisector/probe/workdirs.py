"""The probe pools' temporary folders, each naming the process that made it, so that the folders
of a bisector killed with SIGKILL (which cleans nothing up) are removed by the next one."""

from __future__ import annotations

import os
import shutil
import stat as stat_mod
import tempfile
from pathlib import Path

from bisector.probe.procs import stat

WORKDIR_PREFIX = "bisector-"
OWNER_FILE = "owner"  # "PID START_TIME" of the process whose pool made the folder


def _owner_id(pid: int) -> str:
    st = stat(pid)
    return f"{pid} {st[3] if st else 0}"


def write_owner(workdir: Path) -> None:
    """Name this process as the owner of a temporary folder it made (see sweep_stale_workdirs)."""
    (workdir / OWNER_FILE).write_text(_owner_id(os.getpid()))


def sweep_stale_workdirs(folder: str | Path | None = None, prefix: str = WORKDIR_PREFIX) -> list[Path]:
    """Remove the temporary folders of pools whose process is gone (bisector killed with
    SIGKILL cleans nothing up; every other end of a run removes its own). Only real folders of
    this user that name their owner in a regular file are touched (the temp folder is shared:
    a name alone proves nothing), and only when that process no longer exists."""
    removed = []
    for path in Path(folder or tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            if not stat_mod.S_ISDIR(os.lstat(path).st_mode) or os.lstat(path).st_uid != os.getuid():
                continue
            owner = os.lstat(path / OWNER_FILE)
            if not stat_mod.S_ISREG(owner.st_mode) or owner.st_uid != os.getuid():
                continue
            pid_text, start = (path / OWNER_FILE).read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        st = stat(pid)
        if st is None or str(st[3]) != start:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
