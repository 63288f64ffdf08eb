"""The client side of probe/server.py: start the pre-imported server, ask it to fork a probe, and
hear from it when each probe starts and ends (a reader thread; the pool waits on events)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bisector.common.errors import InternalError
from bisector.probe import containment
from bisector.probe.containment import BoxSpec
from bisector.probe.procs import kill_group

SERVER_READY_TIMEOUT_S = 180.0

# Every probe server alive in this process, for pool.terminate_all (signal handlers).
SERVERS: weakref.WeakSet[ProbeServer] = weakref.WeakSet()


class PoolClosed(Exception):
    """The pool was closed (interrupted) while a probe was waiting for its server."""


@dataclass
class ForkedChild:
    """A probe the server forked, as the server reports it: its pid once started, and how it ended."""

    ident: int
    pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    done: threading.Event = None  # type: ignore[assignment]
    started: threading.Event = None  # type: ignore[assignment]
    box: BoxSpec | None = None

    def __post_init__(self) -> None:
        self.done = threading.Event()
        self.started = threading.Event()


class ProbeServer:
    """The client side of probe/server.py."""

    def __init__(self, env: dict[str, str] | None, log_path: Path, abort: Callable[[], bool] = lambda: False) -> None:
        """Start the server and wait until it has imported everything; abort() is asked while
        waiting (the pool was closed: Ctrl-C must not wait for seconds of imports)."""
        self._children: dict[int, ForkedChild] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._ready = threading.Event()
        self.ready_info: dict[str, Any] = {}
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bisector.probe.server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            start_new_session=True,  # Ctrl-C in the terminal reaches the parent, which cleans up
        )
        SERVERS.add(self)
        self._reader = threading.Thread(target=self._read, name="bisector-probe-server", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
        while not self._ready.wait(0.05):
            if abort() or time.monotonic() > deadline:
                break
        if abort():
            self.kill()
            self.close()
            raise PoolClosed()
        if not self._ready.is_set() or not self.alive:
            self.close()
            raise InternalError(f"the probe server did not start; see {log_path} (or use --fresh)")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if msg.get("ready"):
                self.ready_info = msg
                self._ready.set()
                continue
            with self._lock:
                child = self._children.get(msg.get("id", -1))
            if child is None:
                continue
            if "pid" in msg:
                child.pid = msg["pid"]
                child.started.set()
            elif "exit" in msg or "signal" in msg:
                child.exit_code = msg.get("exit")
                child.signal = msg.get("signal")
                child.started.set()
                child.done.set()
        # The server is gone: nobody will report on the children it had.
        self._ready.set()
        with self._lock:
            for child in self._children.values():
                child.started.set()
                child.done.set()

    def fork(self, ident: int, request_dir: Path, threads: int | None, box: BoxSpec) -> ForkedChild:
        child = ForkedChild(ident, box=box)
        with self._lock:
            self._children[ident] = child
        msg = {"op": "fork", "id": ident, "dir": str(request_dir), "threads": threads, "box": box.to_json()}
        line = json.dumps(msg) + "\n"
        with self._write_lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        return child

    def forget(self, ident: int) -> None:
        with self._lock:
            self._children.pop(ident, None)

    def kill(self) -> None:
        """The server and every probe it forked, at once (each probe leads its own group)."""
        children = list(self._children.values())  # a copy, no lock: see pool.terminate_all
        for c in children:
            if c.pid and not c.done.is_set():
                if c.box is not None:
                    containment.kill_spec(c.box, c.pid)
                if c.box is None or c.box.cgroup:  # a subreaper supervisor is told, never SIGKILLed
                    kill_group(c.pid)
        kill_group(self.proc.pid)

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
        SERVERS.discard(self)
        self._log.close()
