"""The cgroup v2 side of containment (containment.py): this process's own cgroup folder for its
boxes, each box's limits, killing everything in one, and sweeping the folders of bisector
processes that are gone."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from bisector.probe.procs import stat

PIDS_MAX = 4096  # a fork bomb stops here where the pids controller is delegated
PREFIX = "bisector-"


def own_cgroup_dir() -> Path | None:
    """Where this process's cgroup v2 is in the file system, or None (no cgroup v2 mounted)."""
    try:
        rel = next(
            line.strip()[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::")
        )
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields, _, rest = line.partition(" - ")
            if rest.split()[:1] == ["cgroup2"]:
                root, mount = fields.split()[3:5]
                inner = os.path.relpath(rel, root) if rel.startswith(root) else None
                if inner is not None and not inner.startswith(".."):
                    return Path(mount) / ("" if inner == "." else inner)
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return None


def _owner_tag(pid: int) -> str:
    st = stat(pid)
    return f"{pid}-{st[3] if st else 0}"


def make_parent() -> Path | None:
    """This process's own cgroup folder for its boxes (containment.mechanism makes it once); None
    where none can be made."""
    own = own_cgroup_dir()
    if own is None or not os.access(own / "cgroup.procs", os.W_OK):
        return None
    sweep_stale_cgroups(own)
    parent = own / f"{PREFIX}{_owner_tag(os.getpid())}"
    try:
        parent.mkdir(exist_ok=True)
    except OSError:
        return None
    if not os.access(parent / "cgroup.procs", os.W_OK):
        rmdir(parent)
        return None
    # Hand the boxes the memory and pids controllers where bisector's cgroup has them (this
    # folder is bisector's own and holds no process, so enabling them here touches nothing else).
    try:
        have = set((parent / "cgroup.controllers").read_text().split()) & {"memory", "pids"}
        if have:
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(have)))
    except OSError:
        pass
    import atexit

    atexit.register(remove_parent, parent)
    return parent


def limit(path: Path, mem_cap: int | None) -> None:
    try:
        have = set((path / "cgroup.controllers").read_text().split())
    except OSError:
        return
    if "memory" in have and mem_cap:
        _write(path / "memory.max", str(int(mem_cap)))
        _write(path / "memory.swap.max", "0")  # swapping out would hide the growth being capped
    if "pids" in have:
        _write(path / "pids.max", str(PIDS_MAX))


def _write(path: Path, text: str) -> bool:
    try:
        path.write_text(text)
        return True
    except OSError:
        return False


def cgroup_pids(path: Path) -> list[int]:
    pids: list[int] = []
    try:
        for sub in [path, *(p for p in path.rglob("*") if p.is_dir())]:
            with open(sub / "cgroup.procs") as fh:
                pids += [int(x) for x in fh.read().split()]
    except (OSError, ValueError):
        pass
    return pids


def kill_cgroup(path: Path) -> None:
    """SIGKILL every process in the cgroup: cgroup.kill where the kernel has it (5.14+), else
    freeze it (no process forks meanwhile), kill each, thaw."""
    try:
        fd = os.open(path / "cgroup.kill", os.O_WRONLY)
    except FileNotFoundError:
        fd = -1
    except OSError:
        return
    if fd >= 0:
        try:
            os.write(fd, b"1")
            return
        except OSError:
            pass
        finally:
            os.close(fd)
    frozen = _write(path / "cgroup.freeze", "1")
    for _ in range(50):
        pids = cgroup_pids(path)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    if frozen:
        _write(path / "cgroup.freeze", "0")


def rmdir(path: Path) -> None:
    try:
        for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            os.rmdir(sub)
        os.rmdir(path)
    except OSError:
        pass


def remove_parent(parent: Path) -> None:
    for box in parent.glob("box-*"):
        kill_cgroup(box)
    deadline = time.monotonic() + 2
    while any(cgroup_pids(b) for b in parent.glob("box-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    rmdir(parent)


def sweep_stale_cgroups(own: Path | None = None) -> list[Path]:
    """Kill and remove the boxes of bisector processes that are gone (killed with SIGKILL, they
    cleaned nothing up): only folders that name their owner, and only when it no longer exists."""
    own = own or own_cgroup_dir()
    removed: list[Path] = []
    if own is None:
        return removed
    try:
        candidates = list(own.glob(f"{PREFIX}*"))
    except OSError:
        return removed
    for path in candidates:
        try:
            pid_text, start = path.name[len(PREFIX) :].split("-")
            owner = int(pid_text)
        except ValueError:
            continue
        st = stat(owner)
        if st is None or str(st[3]) != start:
            remove_parent(path)
            removed.append(path)
    return removed
