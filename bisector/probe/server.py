"""The probe server: one pre-imported Python process that forks a child per probe.

Importing torch, onnx and onnxruntime costs ~2.7 s and ~250 MB; a child forked from a process that
has already imported them starts in milliseconds. The server imports, runs no user code, never
touches CUDA (a CUDA context does not survive fork), and stays single-threaded in Python.

Protocol, one JSON object a line:
  parent -> server  {"op": "fork", "id": N, "dir": "/path/to/probe/dir", "threads": T}
  server -> parent  {"ready": true, ...} once; then {"id": N, "pid": P} and {"id": N, "exit": C}
                    or {"id": N, "signal": S} when the child ends.
The server exits when its stdin closes, killing any children still running.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable

from bisector.probe.containment import BoxSpec, enter, kill_spec

# Heavy modules a probe needs. Each is optional: a missing one is imported (or fails) in the child.
PRELOAD = ("numpy", "psutil", "torch", "torch.nn")
# What exports and ONNX Runtime sessions need: importing the exporter internals here saves ~2 s on
# a child's first torch.onnx.export, and costs ~2.4 s of CPU at the server's start, which a run
# with no export or inference stage skips (EXPORTER_ENV=0, set by ProbePool(exporter=False)).
EXPORTER_PRELOAD = (
    "torch.export",
    "torch.onnx",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "torch.fx.experimental.symbolic_shapes",
    "torch._subclasses.fake_tensor",
    "torch._functorch.aot_autograd",
    "torch.onnx._internal.exporter._core",
    "torch.onnx._internal.exporter._registration",
)
EXPORTER_ENV = "BISECTOR_PRELOAD_EXPORTER"
# BISECTOR_WARM_EXPORT=0: no warm-up export in the server (warm_exporter; bench/warm_export.py).
WARM_ENV = "BISECTOR_WARM_EXPORT"
OWN = ("bisector.probe.child",)


def startup_modules(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """What the server imports before its first fork: the probes' own modules, the exporter's when
    the run exports, and the libraries the model file imports (BISECTOR_PRELOAD, from the parent)."""
    env = os.environ if environ is None else environ
    extra = tuple(e for e in env.get("BISECTOR_PRELOAD", "").split(",") if e)
    exporter = EXPORTER_PRELOAD if env.get(EXPORTER_ENV, "1") != "0" else ()
    return PRELOAD + exporter + OWN + extra


def preload(modules: tuple[str, ...]) -> list[str]:
    """Import each module ("pkg.mod", or "pkg:Attr" to touch a lazily imported attribute)."""
    failed = []
    for entry in modules:
        name, _, attr = entry.partition(":")
        try:
            module = importlib.import_module(name)
            if attr:
                getattr(module, attr)
        except Exception as exc:  # noqa: BLE001 - a missing optional module is reported, not fatal
            failed.append(f"{entry}: {exc}")
    return failed


def warm_exporter() -> list[str]:
    """One export of a one-op module with torch's default (torch.export-based) exporter, before the
    first fork: the exporter's first export in a process builds state it keeps (its op registry,
    dispatch caches, lazily imported passes), ~0.5 s of CPU that every probe's first export and
    every export in a child process (export_in_child, one fork per export) otherwise pays again.
    Measured (bench/warm_export.py): a forked child's export of a small model 1.1 s cold,
    0.6 s warm. The probes' curves are unchanged in what they judge: growth over the measured calls,
    after their own warm-up, against a control forked from the same server.

    Only with a torch built without CUDA or ROCm: the exporter may ask torch.cuda how many devices
    there are, and a driver initialised in the server does not survive fork (probe/child.py's
    CUDA probes would fail). The export writes no file; tqdm's monitor thread, which the
    exporter's progress bars would start, is kept off (the server stays single-threaded)."""
    import contextlib
    import io

    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - the probes import it themselves and say why
        return [f"warm export: {exc}"]
    if torch.version.cuda or getattr(torch.version, "hip", None):
        return []
    try:
        import tqdm

        tqdm.tqdm.monitor_interval = 0
    except Exception:  # noqa: BLE001 - no tqdm: no monitor thread either
        pass

    class _OneOp(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            torch.onnx.export(_OneOp(), (torch.zeros(2),), None, dynamo=True)
    except Exception as exc:  # noqa: BLE001 - an exporter that cannot: the probes say why, not the server
        return [f"warm export: {exc}"]
    return []


def _child(request_dir: str, threads: int | None, proto_fd: int, server_pid: int, box: BoxSpec) -> None:
    """In the forked child: own process group, own box, own stdio, run the probe, never return."""
    code = 70
    try:
        os.setpgid(0, 0)  # the parent kills the whole group on timeout or memory cap
        os.close(proto_fd)
        # Into the probe's box before any user code runs (in subreaper mode this process stays
        # behind as the supervisor, and its own child goes on from here).
        enter(box)
        # The server is single-threaded, so "dies with its parent" means with the server (or the
        # supervisor), which itself ends (killing its children) when bisector's end closes its stdin.
        from bisector.probe.child import die_with_parent

        die_with_parent(server_pid if box.cgroup else os.getppid())
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        out = os.open(os.path.join(request_dir, "stdout.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(os.path.join(request_dir, "stderr.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        from bisector.probe.child import run_dir

        code = run_dir(request_dir, threads=threads)
    except BaseException:  # noqa: BLE001 - anything escaping becomes an exit code, never a return
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> int:
    proto_fd = os.dup(1)
    os.dup2(2, 1)  # a stray print from an import must not corrupt the protocol
    proto = os.fdopen(proto_fd, "w", buffering=1)

    def send(msg: dict) -> None:
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    started = time.perf_counter()
    # The libraries the model file imports (e.g. transformers, ~7 s) are named by the parent.
    failed = preload(startup_modules())
    warmed = 0.0
    if os.environ.get(EXPORTER_ENV, "1") != "0" and os.environ.get(WARM_ENV, "1") != "0":
        began = time.perf_counter()
        failed += warm_exporter()
        warmed = round(time.perf_counter() - began, 3)
    import gc

    # Frozen objects are skipped by every later collection (in the children too) and their pages
    # stay shared after fork: the point of gc.freeze for pre-fork servers.
    gc.collect()
    gc.freeze()
    import threading

    send(
        {
            "ready": True,
            "pid": os.getpid(),
            "import_s": round(time.perf_counter() - started, 3),
            "warm_export_s": warmed,
            "threads": threading.active_count(),  # Python threads at the first fork: 1, or fork is unsafe
            "failed": failed,
        }
    )

    forks = _Forks(send, proto_fd)
    buf = b""
    stdin_open = True
    while stdin_open or forks.children:
        if stdin_open:
            ready, _, _ = select.select([0], [], [], 0.005)
        else:
            ready = []
            time.sleep(0.005)
        if ready:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                stdin_open = False
                forks.kill_all()  # the parent is gone: nobody will read these results
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    forks.handle(json.loads(line))
        forks.reap()
    return 0


class _Forks:
    """The probes this server forked: started on request, reported when they end."""

    def __init__(self, send: Callable[[dict], None], proto_fd: int) -> None:
        self.send = send
        self.proto_fd = proto_fd
        self.children: dict[int, int] = {}  # pid -> the request's id
        self.boxes: dict[int, BoxSpec] = {}

    def handle(self, msg: dict) -> None:
        if msg.get("op") == "fork":
            server_pid = os.getpid()
            box = BoxSpec.from_json(msg.get("box"))
            pid = os.fork()
            if pid == 0:
                _child(msg["dir"], msg.get("threads"), self.proto_fd, server_pid, box)
            self.children[pid] = msg["id"]
            self.boxes[pid] = box
            self.send({"id": msg["id"], "pid": pid})
        elif msg.get("op") == "ping":
            self.send({"pong": True})

    def kill_all(self) -> None:
        for pid in list(self.children):
            kill_spec(self.boxes[pid], pid)
            if self.boxes[pid].cgroup:  # a subreaper supervisor is told, never SIGKILLed
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass

    def reap(self) -> None:
        """Report every child that has ended, without waiting for one that has not."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                break
            if pid == 0:
                break
            ident = self.children.pop(pid, None)
            self.boxes.pop(pid, None)
            if ident is None:
                continue
            if os.WIFSIGNALED(status):
                self.send({"id": ident, "signal": os.WTERMSIG(status)})
            else:
                self.send({"id": ident, "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1})


if __name__ == "__main__":
    sys.exit(serve())
