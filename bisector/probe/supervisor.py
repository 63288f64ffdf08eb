"""The subreaper supervisor of containment (containment.py): a child subreaper that waits for its
child, reaps every orphan re-parented to it, and when the child ends, when it is told to stop
(SIGTERM) or when its parent dies, kills and reaps everything below it (and in its cgroup), then
ends with the child's own status."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from bisector.probe.cgroups import cgroup_pids
from bisector.probe.procs import process_tree, stat


class _Stop(Exception):
    pass


def become_subreaper() -> None:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: every orphan below comes back here
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG: parent gone -> clean up and go
    except (OSError, AttributeError):
        pass


def stop_supervisor(root: int) -> None:
    # SIGTERM, never SIGKILL: the supervisor must live to kill what is below it (a SIGKILLed
    # subreaper hands its orphans to init). It does so within milliseconds.
    try:
        os.kill(root, signal.SIGTERM)
    except OSError:
        pass


def as_supervised_child() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    if "BISECTOR_PARENT_PID" in os.environ:  # the probe's die-with-parent check: its parent is us
        os.environ["BISECTOR_PARENT_PID"] = str(os.getppid())


def _kill_below(cgroup: str | None, deadline_s: float = 10.0) -> None:
    """SIGKILL every descendant (all are below this subreaper) and every other process of the
    cgroup, and reap them, until none is left."""
    me = os.getpid()
    deadline = time.monotonic() + deadline_s

    def others() -> list[int]:
        found = set(process_tree(me))
        if cgroup:
            found.update(p for p in cgroup_pids(Path(cgroup)) if (stat(p) or (0, 0, "Z"))[2] != "Z")
        found.discard(me)
        return sorted(found)

    while time.monotonic() < deadline:
        below = others()
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        reaped_any = False
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = -1
            if pid <= 0:
                break
            reaped_any = True
        if not below and not reaped_any:
            try:
                os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not others():
                return
        time.sleep(0.005)


def supervise(child: int, cgroup: str | None) -> None:
    """Wait for `child`, reaping every orphan that comes back meanwhile; then kill and reap all
    that is left below, and end with the child's own status. Never returns."""

    def stop(signum: int, _frame: object) -> None:
        raise _Stop(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    status: int | None = None
    stopped_by = 0
    try:
        while status is None:
            try:
                pid, st = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == child:
                status = st
    except _Stop as exc:
        stopped_by = int(exc.args[0])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the clean-up runs to its end
    _kill_below(cgroup)
    if status is not None and os.WIFSIGNALED(status):
        _die_by(os.WTERMSIG(status))
    if status is not None:
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 70)
    _die_by(stopped_by or signal.SIGKILL)


def _die_by(sig: int) -> None:
    """End with the child's signal, so the parent sees what it saw (no core file from us)."""
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    sys.stdout.flush()
    signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)
