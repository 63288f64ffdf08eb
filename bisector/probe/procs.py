"""Processes of a probe's tree, read from Linux /proc (stdlib only: the probe child uses it too).

A probe's tree is its process group (the probe leads its own) plus everything below it; a probe
is a child subreaper (see child.die_with_parent), so what its model daemonizes stays below it while
the probe lives. What escapes once the probe dies abnormally is caught by its box (containment.py).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable


def stat(pid: int) -> tuple[int, int, str, int] | None:
    """(ppid, pgrp, state, start time) from /proc/PID/stat; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ")".
    rest = text[text.rfind(")") + 2 :].split()
    try:
        return int(rest[1]), int(rest[2]), rest[0], int(rest[19])
    except (IndexError, ValueError):
        return None


def process_tree(pid: int) -> dict[int, int]:
    """The live processes in pid's process group or below pid, as pid -> start time (pid itself
    included while it lives). Zombies hold no memory and are left out. Empty where there
    is no /proc (not Linux): the pool then watches the probe alone, as before."""
    try:
        entries: Iterable[str] = os.listdir("/proc")
    except OSError:
        return {}
    stats: dict[int, tuple[int, int, str, int]] = {}
    for name in entries:
        if name.isdigit():
            st = stat(int(name))
            if st is not None and st[2] != "Z":
                stats[int(name)] = st
    members = {p for p, st in stats.items() if st[1] == pid}
    if pid in stats:
        members.add(pid)
    # Descendants that left the group (setsid, a new group) are still below pid.
    children: dict[int, list[int]] = {}
    for p, st in stats.items():
        children.setdefault(st[0], []).append(p)
    todo = list(members)
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in members:
                members.add(c)
                todo.append(c)
    return {p: stats[p][3] for p in members}


def private_bytes(pid: int) -> int:
    """Memory only this process holds (Private_Clean + Private_Dirty): what a helper adds to the
    probe's footprint, without counting twice the pages it shares with the probe after a fork."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            total = 0
            for line in fh:
                if line.startswith(b"Private_"):
                    total += int(line.split()[1]) * 1024
            return total
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            resident, shared = fh.read().split()[1:3]
        return (int(resident) - int(shared)) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def kill_descendants() -> int:
    """SIGKILL every process of this process's tree but itself: what the model started and left
    running. Called by the probe child as it ends, when only it still knows its adopted orphans
    (the pool's scans, four a second, may not have seen a process started just before the end)."""
    me = os.getpid()
    killed = 0
    # Below this process, and in its group only when it leads that group (a probe always does;
    # a child run by hand from a shell must not touch the shell's job).
    for pid in process_tree(me):
        if pid != me:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def footprint(main: int, members: Iterable[int]) -> int:
    """Memory of a process tree as the memory cap counts it: the main process's RSS plus the
    private memory of every other member (pages a forked helper still shares with it count once)."""
    return rss_bytes(main) + sum(private_bytes(p) for p in members if p != main)


def first_child(pid: int) -> int | None:
    """The oldest live child of pid (a supervisor's own command, not the orphans it adopted later)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as fh:
            kids = [int(x) for x in fh.read().split()]
    except (OSError, ValueError):
        kids = [p for p, st in _all_stats().items() if st[0] == pid]
    started = {k: st[3] for k in kids if (st := stat(k)) is not None and st[2] != "Z"}
    return min(started, key=lambda k: started[k]) if started else None


def _all_stats() -> dict[int, tuple[int, int, str, int]]:
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := stat(int(name))) is not None:
            found[int(name)] = st
    return found


def kill_group(pid: int) -> None:
    """SIGKILL the process group pid leads, or pid alone where it leads none."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
