"""Run probes in child processes, with a timeout and a memory cap, and bring back a result.

Two ways to start a child:
- from the probe server (default): a pre-imported process forks it in milliseconds;
- fresh (``fresh=True``, ``--fresh``): a new interpreter per probe, ~2.7 s of imports each, for
  when the fork model itself is in doubt.

Whatever the child does (segfault, abort, OOM, hang, a runaway allocation) comes back as a
result; the parent never hangs and never raises for it. The parent polls the memory of the
probe's box (containment.py: a cgroup, or a subreaper supervisor, that no process below the probe
can leave, setsid or not): the child's RSS plus the private memory of every other process in it (a
helper the forward spawns counts too); it kills the whole box at the cap and at the timeout, and
when the probe ends, however it ends (a normal exit, os._exit, a segfault), whatever it left
running is killed.

A probe never outlives bisector: ``terminate_all`` (called by the CLI on SIGINT, SIGTERM and
SIGHUP) kills every running probe and probe server and removes the temporary folders; a fresh
child also asks the kernel to kill it when its parent dies (PR_SET_PDEATHSIG), and the server
kills its children when its stdin closes, as it does when bisector dies.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bisector.probe import containment
from bisector.probe.containment import Box
from bisector.probe.procs import kill_group, private_bytes, process_tree, rss_bytes, stat
from bisector.probe.server import EXPORTER_ENV, WARM_ENV
from bisector.probe.server_client import SERVER_READY_TIMEOUT_S, SERVERS, PoolClosed, ProbeServer
from bisector.probe.types import (
    ProbeCrashed,
    ProbeRequest,
    ProbeResult,
    ProbeTimedOut,
    result_from_json,
)
from bisector.probe.workdirs import WORKDIR_PREFIX, sweep_stale_workdirs, write_owner

DEFAULT_TIMEOUT_S = 300.0
TAIL_LINES = 15
# Scanning /proc for the probe's process tree costs ~20 µs a process (measured: 1.8 ms with 87
# processes on the project's 2-core machine); four scans a second find a helper long before it
# can do much harm, while the direct child's RSS is still read every poll.
TREE_SCAN_S = 0.25

# Every pool alive in this process, for terminate_all (signal handlers).
_POOLS: weakref.WeakSet[ProbePool] = weakref.WeakSet()


def terminate_all() -> int:
    """Kill every running probe (its whole process tree) and every probe server of every pool in
    this process, mark the pools closed (a probe asked for afterwards comes back at once as
    "interrupted") and remove their temporary folders. Safe to call from a signal handler: it
    takes no lock (the interrupted code may hold any). Returns how many probes were killed."""
    killed = 0
    for pool in _snapshot(_POOLS):
        killed += pool.terminate()
    for server in _snapshot(SERVERS):
        server.kill()
    containment.kill_all()  # the inference, bundle and check children (containment.run)
    return killed


def _snapshot(items: weakref.WeakSet[Any]) -> list[Any]:
    # A WeakSet is iterated in Python code: a probe thread adding a pool or server meanwhile
    # makes list() raise "changed size during iteration"; a retry sees it settled.
    for _ in range(5):
        try:
            return list(items)
        except RuntimeError:
            continue
    return []


def default_mem_cap() -> int:
    """Half the machine's memory, at most 16 GB: room for a real model, none for a runaway."""
    import psutil

    return int(min(psutil.virtual_memory().total * 0.5, 16e9))


def exports(stages: object) -> bool:
    """Whether runs over these stages export (and so want the exporter loaded by the server):
    None or an unknown value counts as every stage."""
    if not isinstance(stages, (list, tuple, set, frozenset)):
        return True
    return bool({"export", "inference"} & {str(s) for s in stages})


def warms(stages: object, exporter: object = None) -> bool:
    """Whether the server for runs over these stages makes its warm-up export (server.py,
    warm_exporter): for an export stage (each of its probes exports 8 times or more, a fix that
    exports in a child process once per export) with torch's default exporter, not for runs whose
    only export is the inference stage's one per run, where the ~1 s it adds to the server's
    start-up is not won back. None or an unknown value counts as every stage."""
    if exporter not in (None, "", "dynamo"):
        return False
    if not isinstance(stages, (list, tuple, set, frozenset)):
        return True
    return "export" in {str(s) for s in stages}


class ProbePool:
    """Runs probes; thread-safe, so several may run at once (one thread each)."""

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        fresh: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        mem_cap: int | None = None,
        threads: int | None = None,
        env: dict[str, str] | None = None,
        poll_s: float = 0.02,
        preload: tuple[str, ...] = (),
        exporter: bool = True,
        warm_export: bool = True,
    ) -> None:
        """preload: the libraries the models import, loaded once by the probe server. exporter:
        whether the runs export (an export or inference stage): if not, the server does not load
        the exporter and ONNX Runtime (a probe that needs them after all imports them itself).
        warm_export: whether the server also makes its warm-up export (warms())."""
        self._own_workdir = workdir is None
        if workdir is None:
            sweep_stale_workdirs()
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        (self.workdir / "probes").mkdir(parents=True, exist_ok=True)
        if workdir is None:
            write_owner(self.workdir)
        self.fresh = fresh
        self.timeout_s = timeout_s
        self.mem_cap = mem_cap if mem_cap is not None else default_mem_cap()
        self.threads = threads
        self.env = env
        if preload or not exporter or not warm_export:
            extra = {"BISECTOR_PRELOAD": ",".join(preload)} if preload else {}
            if not warm_export:
                extra[WARM_ENV] = "0"
            self.env = {**(env if env is not None else os.environ), **extra, EXPORTER_ENV: "1" if exporter else "0"}
        self.poll_s = poll_s
        self._ids = itertools.count(1)
        self._server: ProbeServer | None = None
        self._server_lock = threading.Lock()
        self.probes_run = 0
        self._count_lock = threading.Lock()
        self.closed = False
        # pid of every probe running now -> its box, and the processes of its tree seen so far
        # (pid -> start time, so a pid the kernel has reused is never killed).
        self._running: dict[int, tuple[Box, dict[int, int]]] = {}
        _POOLS.add(self)

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> ProbePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True
        self._kill_running()  # a probe still running is killed, not awaited
        with self._server_lock:
            if self._server is not None:
                self._server.close()
                self._server = None
        _POOLS.discard(self)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def terminate(self) -> int:
        """Kill every running probe and the server now, without waiting or locking (see
        terminate_all); the temporary folder goes too. close() still works afterwards."""
        self.closed = True
        killed = self._kill_running()
        server = self._server
        if server is not None:
            server.kill()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return killed

    def _kill_running(self) -> int:
        running = list(self._running.items())  # a copy: probe threads add and remove entries
        for pid, (box, tree) in running:
            _kill_tree(pid, tree, box)
        return len(running)

    def server_info(self) -> dict[str, Any]:
        """What the probe server said when it was ready (its imports' and warm-up export's
        seconds, its Python threads, what failed to load); starts it if it is not running."""
        return dict(self._get_server().ready_info)

    def _get_server(self) -> ProbeServer:
        with self._server_lock:
            if self.closed:
                raise PoolClosed()
            if self._server is None or not self._server.alive:
                if self._server is not None:
                    self._server.close()
                self._server = ProbeServer(self.env, self.workdir / "server.log", abort=lambda: self.closed)
            return self._server

    # -- running --------------------------------------------------------------------------------

    def run(
        self,
        request: ProbeRequest,
        *,
        timeout_s: float | None = None,
        mem_cap: int | None = None,
        fresh: bool | None = None,
    ) -> ProbeResult:
        """Run one probe in a child process and return what happened; never raises for the child.
        timeout_s, mem_cap and fresh override the pool's own for this probe: a pool shared by
        several models (the pytest plugin's, repair's) honours each model's limits."""
        if self.closed:
            return ProbeCrashed("interrupted", None, None, "the probe pool was closed (interrupted)")
        ident = next(self._ids)
        with self._count_lock:
            self.probes_run += 1
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.label or request.tag)[:60].strip("-")
        request_dir = self.workdir / "probes" / f"{ident:04d}-{slug}"
        try:
            try:
                request_dir.mkdir(parents=True, exist_ok=True)
                (request_dir / "request.json").write_text(json.dumps(request.to_json()))
            except OSError:
                if not self.closed:
                    raise
                return ProbeCrashed("interrupted", None, None, "the probe pool was closed (interrupted)")
            use_fresh = self.fresh if fresh is None else fresh
            with Box(mem_cap or self.mem_cap) as box:
                result = self._run_in_child(
                    request_dir, ident, timeout_s or self.timeout_s, mem_cap or self.mem_cap, use_fresh, box
                )
            if result.kind != "ok":
                # Where its request and stderr are, for the caller to keep (the pool's own folder goes at close).
                from dataclasses import replace

                result = replace(result, probe_dir=str(request_dir))
            return result
        finally:
            # A probe that began just before the pool was closed (Ctrl-C) may have made its
            # folder again after close() removed the workdir: the last one out removes it.
            if self.closed and self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _run_in_child(
        self, request_dir: Path, ident: int, timeout_s: float, mem_cap: int, fresh: bool, box: Box
    ) -> ProbeResult:
        """Start the probe's child (fresh or forked by the server), watch it to its end under the
        timeout and the memory cap, and read what it left."""
        started = time.perf_counter()
        child = self._start_fresh(request_dir, box) if fresh else self._start_forked(ident, request_dir, box)
        if isinstance(child, ProbeCrashed):
            return child
        watched = self._watch(child, box, started, timeout_s, mem_cap)
        child.release()
        return _outcome(request_dir, watched, time.perf_counter() - started, timeout_s, mem_cap, box, self.closed)

    def _start_fresh(self, request_dir: Path, box: Box) -> _Started:
        env = {**(self.env if self.env is not None else os.environ), "BISECTOR_PARENT_PID": str(os.getpid())}
        with open(request_dir / "stdout.txt", "wb") as out, open(request_dir / "stderr.txt", "wb") as err:
            proc = subprocess.Popen(
                box.command(
                    [sys.executable, "-m", "bisector.probe.child", str(request_dir)]
                    + ([f"--threads={self.threads}"] if self.threads else [])
                ),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )

        def finished() -> tuple[bool, int | None, int | None]:
            rc = proc.poll()
            if rc is None:
                return False, None, None
            return True, (rc if rc >= 0 else None), (-rc if rc < 0 else None)

        def wait(seconds: float) -> None:
            try:
                proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                pass

        return _Started(proc.pid, finished, wait)

    def _start_forked(self, ident: int, request_dir: Path, box: Box) -> _Started | ProbeCrashed:
        try:
            server = self._get_server()
        except PoolClosed:
            return ProbeCrashed("interrupted", None, None, "the probe pool was closed (interrupted)")
        try:
            child = server.fork(ident, request_dir, self.threads, box.spec)
        except OSError:  # the server died (killed by terminate_all) before it read the request
            server.forget(ident)
            reason = "interrupted" if self.closed else "exit"
            return ProbeCrashed(reason, None, None, "the probe server is gone", wall_s=0.0)
        if not child.started.wait(SERVER_READY_TIMEOUT_S) or child.pid is None:
            server.forget(ident)
            reason = "interrupted" if self.closed else "exit"
            return ProbeCrashed(reason, None, None, "the probe server did not start the child", wall_s=0.0)

        def finished() -> tuple[bool, int | None, int | None]:
            if child.done.is_set():
                return True, child.exit_code, child.signal
            return False, None, None

        def wait(seconds: float) -> None:
            child.done.wait(seconds)  # wakes at once when the server reports the exit

        return _Started(child.pid, finished, wait, release=lambda: server.forget(ident))

    def _watch(self, child: _Started, box: Box, started: float, timeout_s: float, mem_cap: int) -> _Watched:
        """Poll the child until it ends; kill its whole box at the timeout or the memory cap, and
        whatever it left running when it ends, however it ends."""
        pid = child.pid
        box.started(pid)
        tree: dict[int, int] = {}
        self._running[pid] = (box, tree)
        if self.closed:  # interrupted while this child was starting
            _kill_tree(pid, tree, box)
        # The process whose RSS is read every poll: the probe (not the supervisor above a --fresh
        # probe); the rest of the box counts its private memory.
        main = pid
        peak = 0
        others = 0  # private memory of the rest of the tree at the last scan
        next_scan = 0.0
        killed_for: str | None = None
        try:
            while True:
                done, exit_code, sig = child.finished()
                if done:
                    break
                elapsed = time.perf_counter() - started
                if killed_for is None:
                    if elapsed > timeout_s:
                        killed_for = "timeout"
                        _kill_tree(pid, tree, box)
                    else:
                        if elapsed >= next_scan:
                            next_scan = elapsed + TREE_SCAN_S
                            members = {**process_tree(pid), **box.members()}
                            tree.update(members)
                            main = box.main() or pid
                            others = sum(private_bytes(p) for p in members if p != main)
                        rss = rss_bytes(main)
                        peak = max(peak, rss + others)
                        if rss + others > mem_cap:
                            killed_for = "memory-cap"
                            _kill_tree(pid, tree, box)
                child.wait(self.poll_s)
        finally:
            # Whatever the probe started and left behind (a helper, a `sleep 600`, a setsid
            # grandchild of a probe that died) ends with it: its whole box.
            tree.update(process_tree(pid))
            ended = child.finished()[0]
            if ended:
                box.reaped()
            _kill_tree(pid, tree, box, ended=ended)
            self._running.pop(pid, None)
        return _Watched(killed_for, peak, exit_code, sig)


@dataclass(frozen=True)
class _Started:
    """A probe's child as the watch sees it, however it was started."""

    pid: int
    finished: Callable[[], tuple[bool, int | None, int | None]]  # (ended, exit code, signal)
    wait: Callable[[float], None]  # until it ends or the seconds pass
    release: Callable[[], None] = lambda: None  # the server forgets a forked child


@dataclass(frozen=True)
class _Watched:
    """How the watch ended: why bisector killed the child, if it did; its peak; its exit."""

    killed_for: str | None  # "timeout", "memory-cap" or None
    peak: int
    exit_code: int | None
    sig: int | None


def _outcome(
    request_dir: Path, watched: _Watched, wall: float, timeout_s: float, mem_cap: int, box: Box, closed: bool
) -> ProbeResult:
    """The probe's result: its own (result.json), or why it has none."""
    killed_for, peak, exit_code, sig = watched.killed_for, watched.peak, watched.exit_code, watched.sig
    tail = read_tail(request_dir / "stderr.txt")
    if killed_for == "timeout":
        return ProbeTimedOut(timeout_s=timeout_s, tail=tail, wall_s=wall)
    if killed_for is None and sig == signal.SIGKILL and box.oom_killed():
        killed_for = "memory-cap"  # the kernel's memory.max was quicker than the poll
        peak = max(peak, mem_cap)
    if killed_for == "memory-cap":
        return ProbeCrashed("memory-cap", "SIGKILL", None, tail, peak_rss=peak, wall_s=wall)
    result_path = request_dir / "result.json"
    if closed and not (exit_code == 0 and result_path.exists()):
        return ProbeCrashed("interrupted", None, exit_code, tail, peak_rss=peak or None, wall_s=wall)
    if exit_code == 0 and result_path.exists():
        try:
            return result_from_json(json.loads(result_path.read_text()))
        except (ValueError, KeyError) as exc:
            return ProbeCrashed("exit", None, 0, f"unreadable probe result: {exc}\n{tail}", wall_s=wall)
    if sig is not None:
        return ProbeCrashed("signal", _signal_name(sig), None, tail, peak_rss=peak or None, wall_s=wall)
    return ProbeCrashed("exit", None, exit_code, tail, peak_rss=peak or None, wall_s=wall)


def _kill_tree(pid: int, tree: dict[int, int], box: Box, ended: bool = False) -> None:
    """Kill the probe's box (everything in it, wherever it went), its process group, and every
    process seen in its tree that is still the same process (same start time: never a reused
    pid). ended: the probe itself is reaped, so its pid may be anyone's now: only its group is
    signalled (the kernel gives no new process a pid that is still a group's id). In subreaper
    mode pid is the supervisor, which must not be SIGKILLed: told to stop, it kills all below it."""
    box.kill()
    if box.kind == containment.SUBREAPER:
        pass
    elif ended:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    else:
        kill_group(pid)
    for member, start in list(tree.items()):
        if member == pid:
            continue
        st = stat(member)
        if st is not None and st[3] == start:
            try:
                os.kill(member, signal.SIGKILL)
            except OSError:
                pass


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def read_tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])
