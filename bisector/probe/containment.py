"""Containment of every child process that runs user code: probes (server and --fresh), the
input-inference child, the bundle child and the project's check command (issue 19).

A process group is not enough: a model's helper can call ``setsid()`` and leave it, and once the
probe dies abnormally (``os._exit``, a segfault) nothing below it is found again. So each child
runs in a *box* that no process below it can leave:

- ``cgroup``: a cgroup v2 of its own (``<bisector's cgroup>/bisector-PID-START/box-N``), entered
  before any user code runs (by the supervisor below, or by a probe the server forks). Every
  descendant stays in it whatever it does; ``cgroup.procs`` lists them all, and ``cgroup.kill``
  (or a freeze-and-kill loop on kernels before 5.14) ends them all. Where the ``memory`` and
  ``pids`` controllers are delegated to bisector's cgroup, the box also gets ``memory.max`` (the
  cap, enforced by the kernel for the whole tree) and ``pids.max``.
- ``subreaper`` (no writable cgroup v2): the box is what is below the supervisor.

The supervisor (``python -m bisector.probe.containment [--cgroup DIR] -- CMD``, or the forked
probe's own parent in subreaper mode) is a child subreaper (``PR_SET_CHILD_SUBREAPER``): every
orphan below it, setsid or not, is re-parented to it. When its child ends (however it ends), when
it is told to stop (SIGTERM) or when its parent dies (PR_SET_PDEATHSIG, so a SIGKILLed bisector
too), it SIGKILLs everything below it (and in its cgroup), reaps them, and exits with the child's
own status. Without a cgroup it cannot catch what was re-parented away before it existed, nor
survive its own SIGKILL (bisector never sends it one).

``BISECTOR_CONTAINMENT=cgroup|subreaper`` forces a mechanism (``auto``, the default, takes the
cgroup where one can be made). ``mechanism()`` says which is in force. The cgroup files are
handled in cgroups.py, the supervisor's loop is supervisor.py's; its entry point stays here.

The memory cap counts the whole box: the main process's RSS plus the private memory of every
other process in it (``procs.footprint``), polled by the parent; ``memory.max`` backs it up in
the kernel where it exists.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from bisector.probe import cgroups, supervisor
from bisector.probe.procs import first_child, footprint, process_tree, stat

ENV = "BISECTOR_CONTAINMENT"
CGROUP = "cgroup"
SUBREAPER = "subreaper"
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}
_BOXES: weakref.WeakSet[Box] = weakref.WeakSet()
_IDS = itertools.count(1)


# -- which mechanism ----------------------------------------------------------------------------


def mechanism() -> str:
    """ "cgroup" or "subreaper": how this process contains its children (decided once)."""
    with _LOCK:
        if "kind" not in _STATE:
            wanted = os.environ.get(ENV, "auto").strip().lower()
            parent = (
                cgroups.make_parent() if wanted in ("auto", CGROUP, "") and sys.platform.startswith("linux") else None
            )
            _STATE["parent"] = parent
            _STATE["kind"] = CGROUP if parent is not None else SUBREAPER
        return str(_STATE["kind"])


def describe() -> str:
    """One line for --debug and the README's claims: the mechanism and what it gives."""
    kind = mechanism()
    if kind == SUBREAPER:
        return "subreaper supervisor (no writable cgroup v2)"
    parent = _STATE["parent"]
    assert isinstance(parent, Path)
    try:
        controllers = (parent / "cgroup.subtree_control").read_text().split()
    except OSError:
        controllers = []
    extra = ", ".join(f"{c}.max" for c in controllers if c in ("memory", "pids"))
    return f"cgroup v2 at {parent}" + (f" ({extra})" if extra else " (no memory/pids controller: polled cap)")


def _reset_for_tests() -> None:
    with _LOCK:
        parent = _STATE.pop("parent", None)
        _STATE.pop("kind", None)
    if isinstance(parent, Path):
        cgroups.remove_parent(parent)


# -- the box ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoxSpec:
    """What a child needs to enter its box: a cgroup folder, or None for a subreaper supervisor.
    Travels to the probe server as JSON (``to_json``/``from_json``)."""

    cgroup: str | None

    def to_json(self) -> str | None:
        return self.cgroup

    @staticmethod
    def from_json(value: str | None) -> BoxSpec:
        return BoxSpec(value or None)


class Box:
    """One contained child and everything it starts. Open it, start the child with ``command``
    (a new process) or ``enter`` (in a forked child), and ``close`` it: whatever is still in it
    is killed, and its cgroup removed."""

    def __init__(self, mem_cap: int | None = None) -> None:
        self.kind = mechanism()
        self.root: int | None = None  # the child's pid (its supervisor's, when it has one)
        self.supervised = False  # started with command(): root is a supervisor above the command
        self._main: int | None = None
        self.path: Path | None = None
        if self.kind == CGROUP:
            parent = _STATE["parent"]
            assert isinstance(parent, Path)
            self.path = parent / f"box-{os.getpid()}-{next(_IDS)}"
            self.path.mkdir()
            cgroups.limit(self.path, mem_cap)
        self.spec = BoxSpec(str(self.path) if self.path else None)
        _BOXES.add(self)

    def __enter__(self) -> Box:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def command(self, argv: list[str]) -> list[str]:
        """argv, run below a supervisor that enters the box (its cgroup, if any) before argv
        starts, and ends everything in it when argv ends or bisector goes."""
        self.supervised = True
        where = ["--cgroup", str(self.path)] if self.path is not None else []
        return [sys.executable, "-m", "bisector.probe.containment", *where, "--", *argv]

    def started(self, pid: int) -> None:
        self.root = pid

    def reaped(self) -> None:
        """The child has been reaped: its pid may be anyone's now, so it is never signalled again
        (a subreaper supervisor killed all below it before it exited)."""
        self.root = None

    def members(self) -> dict[int, int]:
        """Every live process in the box, as pid -> start time."""
        if self.path is not None:
            found = {}
            for pid in cgroups.cgroup_pids(self.path):
                st = stat(pid)
                if st is not None and st[2] != "Z":
                    found[pid] = st[3]
            return found
        return process_tree(self.root) if self.root else {}

    def main(self) -> int | None:
        """The process the user's code runs in: the supervisor's command, else the root."""
        if not self.supervised or self.root is None:
            return self.root
        if self._main is None:
            self._main = first_child(self.root)
        return self._main or self.root

    def footprint(self) -> int:
        """Memory of the whole box: the main process's RSS plus what every other one holds alone."""
        main = self.main()
        return footprint(main, self.members()) if main else 0

    def oom_killed(self) -> bool:
        """The kernel's memory.max killed something in the box (cgroup with memory controller)."""
        if self.path is None:
            return False
        try:
            for line in (self.path / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def kill(self) -> None:
        """SIGKILL everything in the box now. No lock and no allocation-heavy work: called from
        signal handlers (pool.terminate_all)."""
        if self.path is not None:
            cgroups.kill_cgroup(self.path)
        elif self.root:
            supervisor.stop_supervisor(self.root)

    def close(self, wait_s: float = 5.0) -> None:
        """Kill what is left and wait (up to wait_s) until the box is empty; remove its cgroup."""
        self.kill()
        if self.path is not None:
            deadline = time.monotonic() + wait_s
            while cgroups.cgroup_pids(self.path) and time.monotonic() < deadline:
                cgroups.kill_cgroup(self.path)
                time.sleep(0.01)
            cgroups.rmdir(self.path)
        _BOXES.discard(self)


def kill_all() -> None:
    """Kill every open box of this process (pool.terminate_all: SIGINT, SIGTERM, SIGHUP)."""
    for _ in range(5):
        try:
            boxes = list(_BOXES)
            break
        except RuntimeError:  # a thread opened or closed one meanwhile
            continue
    else:
        return
    for box in boxes:
        box.kill()


def kill_spec(spec: BoxSpec, root: int) -> None:
    """Kill a box known only by its spec and its child's pid (the probe server, as it ends)."""
    if spec.cgroup:
        cgroups.kill_cgroup(Path(spec.cgroup))
    else:
        supervisor.stop_supervisor(root)


def enter(spec: BoxSpec) -> None:
    """In a child just forked (the probe server's): enter the box before any user code runs.
    cgroup: move this process into it. subreaper: this process becomes the supervisor and never
    returns; its own forked child returns here and goes on to run the probe."""
    if spec.cgroup:
        with open(os.path.join(spec.cgroup, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))
        return
    supervisor.become_subreaper()
    child = os.fork()
    if child == 0:
        supervisor.as_supervised_child()
        return
    supervisor.supervise(child, None)


def main(argv: list[str] | None = None) -> int:
    """``python -m bisector.probe.containment [--cgroup DIR] -- CMD...``: run CMD in the box."""
    args = list(sys.argv[1:] if argv is None else argv)
    cgroup = None
    if args[:1] == ["--cgroup"] and len(args) > 1:
        cgroup, args = args[1], args[2:]
        try:
            enter(BoxSpec(cgroup))
        except OSError as exc:
            print(f"bisector: cannot enter the cgroup {cgroup}: {exc}", file=sys.stderr)
            return 125
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m bisector.probe.containment -- CMD [ARG...]", file=sys.stderr)
        return 2
    parent = os.environ.get("BISECTOR_PARENT_PID", "")
    supervisor.become_subreaper()
    if parent.isdigit() and os.getppid() != int(parent):
        return 70  # bisector died before we could ask to follow it
    try:
        child = os.fork()
    except OSError as exc:
        print(f"bisector: cannot start {args[0]}: {exc}", file=sys.stderr)
        return 126
    if child == 0:
        try:
            supervisor.as_supervised_child()
            os.execvp(args[0], args)
        except OSError as exc:
            print(f"bisector: cannot start {args[0]}: {exc}", file=sys.stderr)
        os._exit(127)
    supervisor.supervise(child, cgroup)
    return 70  # not reached


# -- running a contained command ----------------------------------------------------------------

HEAD_BYTES = 64 * 1024
SCAN_S = 0.25  # how often run() reads the box's memory (a /proc scan: ~2 ms with 100 processes)
TAIL_BYTES = 64 * 1024


class _Capture:
    """A pipe's output, bounded: its head and its tail (a flood costs CPU, never memory)."""

    def __init__(self, head: int, tail: int) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0
        self._head_max = head
        self._tail_max = tail

    def feed(self, chunk: bytes) -> None:
        room = self._head_max - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self._tail_max:
                cut = len(self.tail) - self._tail_max
                self.dropped += cut
                del self.tail[:cut]

    def value(self) -> bytes:
        middle = f"\n[... {self.dropped} bytes left out ...]\n".encode() if self.dropped else b""
        return bytes(self.head) + middle + bytes(self.tail)


def _drain(stream: object, capture: _Capture) -> None:
    fd = stream.fileno()  # type: ignore[attr-defined]
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        capture.feed(chunk)


@dataclass(frozen=True)
class Contained:
    """How a contained command ended: its exit status (negative: killed by that signal, None:
    bisector stopped it), its output (head and tail only), and why bisector stopped it, if it
    did ("timeout" or "memory-cap")."""

    returncode: int | None
    stdout: bytes
    stderr: bytes
    stopped: str | None = None
    peak_bytes: int = 0


def run(
    argv: list[str],
    *,
    timeout_s: float,
    mem_cap: int | None = None,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    stdout_head: int = HEAD_BYTES,
    poll_s: float = 0.05,
) -> Contained:
    """Run argv in a box of its own, with a timeout and a memory cap on the whole box; when the
    command ends (or is stopped), everything it started is killed, so a daemon holding its pipes
    cannot keep bisector waiting. Ctrl-C (KeyboardInterrupt) kills the box and propagates."""
    box = Box(mem_cap)
    out, err = _Capture(stdout_head, TAIL_BYTES), _Capture(16 * 1024, TAIL_BYTES)
    try:
        proc = subprocess.Popen(
            box.command(argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,  # Ctrl-C at the terminal reaches bisector, which kills the box
        )
    except BaseException:
        box.close()
        raise
    box.started(proc.pid)
    readers = [
        threading.Thread(target=_drain, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True),
    ]
    for t in readers:
        t.start()
    try:
        if stdin is not None:
            threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
        stopped, peak = _watch(proc, box, timeout_s, mem_cap, poll_s)
    finally:
        box.close()  # the command's daemons too: they may hold its pipes open
        proc.wait()
        for t in readers:
            t.join(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    if stopped is None and box.oom_killed():
        stopped = "memory-cap"
    return Contained(
        returncode=None if stopped else proc.returncode,
        stdout=out.value(),
        stderr=err.value(),
        stopped=stopped,
        peak_bytes=peak,
    )


def _watch(
    proc: subprocess.Popen[bytes], box: Box, timeout_s: float, mem_cap: int | None, poll_s: float
) -> tuple[str | None, int]:
    """Wait for the command to end; stop at the timeout or when the box's memory passes the cap.
    Returns why it stopped ("timeout", "memory-cap" or None) and the peak memory seen."""
    stopped: str | None = None
    peak = 0
    deadline = time.monotonic() + timeout_s
    next_scan = 0.0
    while proc.poll() is None:
        now = time.monotonic()
        if now > deadline:
            stopped = "timeout"
            break
        if mem_cap and now >= next_scan:
            next_scan = now + SCAN_S
            used = box.footprint()
            peak = max(peak, used)
            if used > mem_cap:
                stopped = "memory-cap"
                break
        try:
            proc.wait(poll_s)
        except subprocess.TimeoutExpired:
            pass
    return stopped, peak


def _feed(stream: object, data: bytes) -> None:
    try:
        stream.write(data)  # type: ignore[attr-defined]
        stream.close()  # type: ignore[attr-defined]
    except OSError:  # the command ended without reading it all
        pass


if __name__ == "__main__":
    sys.exit(main())
