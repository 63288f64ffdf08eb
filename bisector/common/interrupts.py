"""SIGINT, SIGTERM and SIGHUP: kill every probe, unwind as Ctrl-C does, exit with 128+N.

The handlers are installed by the entry point before anything heavy is imported (typer, rich, and
later torch's helpers): a signal in the first fraction of a second must not fall into Python's own
SIGINT handling or typer's (which turns any KeyboardInterrupt into exit 130), nor into the middle
of an import with no handler at all. Whatever a signal interrupts (an import, which then fails
with ImportError, an argument parser, a command), the exit code is 128 + the first signal's number
because received() says a signal came: see bisector/__main__.py and cli.main.

A signal raises KeyboardInterrupt, after killing every probe. One raised between renaming a file
into place and noting it as written would make the report say "--apply wrote nothing" about a
file it did write; inside ``deferred()`` the exception waits until the step is done.

Python runs a signal handler only in the main thread, and only when that thread runs bytecode.
The kernel, though, hands a process-directed signal to whichever thread takes it first, and a
worker that is unmasking signals at that instant (starting a thread or a probe) can take it: the
C-level handler then only sets a flag, and a main thread asleep in Future.result() is never
woken, so bisector kept waiting for the probe's timeout (issue 26: SIGHUP with --fresh, alive 30 s
later). The forwarder closes that gap: the C handler also writes the signal's number to a pipe
(signal.set_wakeup_fd) from whichever thread it runs in; a small thread reading that pipe sends
the signal on to the main thread (signal.pthread_kill) if the handler has not run within 50 ms.

Kept light on purpose (stdlib modules the interpreter has mostly loaded already; no typing): it
is imported first.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

_state = threading.local()
NAMES = ("SIGINT", "SIGTERM", "SIGHUP")
# Signals received, in order: the exit code is 128 + the first.
SIGNALS: list[int] = []
# How long the main thread has to run the handler itself before the forwarder sends the signal on
# to it, and how often at most it sends one on.
FORWARD_AFTER_S = 0.05
FORWARD_EVERY_S = 1.0
# Copies the forwarder sent to the main thread that the handler has not yet recognised as copies.
_copies = 0
_forwarder: threading.Thread | None = None
# Stop signals our handlers have run for, ever: the forwarder compares it with the signals the C
# handler wrote to its pipe. Not SIGNALS, which a library caller (or a test) may start afresh: a
# forwarder that woke late then took a handled signal for a lost one and sent it on to whatever
# handler was in place by then (pytest's own: a KeyboardInterrupt that killed an xdist worker).
_handled = 0
# The handler install_handlers put in place: the forwarder sends a signal on only to it.
_installed: Callable[[int, FrameType | None], None] | None = None


def deferring() -> bool:
    """Whether this thread is inside deferred() (signal handlers run in the main thread)."""
    return getattr(_state, "depth", 0) > 0


def defer(signum: int) -> None:
    """Called by a signal handler instead of raising: deferred() raises when it ends."""
    _state.pending = signum


@contextmanager
def deferred() -> Iterator[None]:
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0 and getattr(_state, "pending", None) is not None:
            _state.pending = None
            raise KeyboardInterrupt


def received() -> int | None:
    """The first signal received, if any."""
    return SIGNALS[0] if SIGNALS else None


def exit_code() -> int:
    """128 + the first signal (a shell's code for a process the signal ended); 130 if none."""
    return 128 + (received() or signal.SIGINT)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def stop_probes() -> None:
    """Kill every probe and probe server of this process and remove their temporary folders.
    The pool module is looked up, not imported: if it is not imported, no probe was ever started;
    if it is being imported right now (partly initialised), no pool exists yet."""
    pool = sys.modules.get("bisector.probe.pool")
    terminate_all = getattr(pool, "terminate_all", None)
    if terminate_all is not None:
        terminate_all()


def on_signal(signum: int, frame: FrameType | None) -> None:
    """Stop at once: kill every probe (whole process trees) and probe server, remove the
    temporary folders, then unwind as Ctrl-C does, so what finished is kept and reported.
    Without this, SIGTERM left --fresh children running with no timeout or cap, and Ctrl-C
    waited for the running probe's timeout."""
    global _copies, _handled
    _handled += 1
    if _copies and SIGNALS:  # the forwarder's copy of a signal already handled here
        _copies -= 1
        stop_probes()
        return
    SIGNALS.append(signum)
    stop_probes()
    if deferring():  # a file being put in place: raise once it is done and noted
        defer(signum)
        return
    raise KeyboardInterrupt


def _note(signum: int, frame: FrameType | None) -> None:
    global _handled
    _handled += 1
    SIGNALS.append(signum)
    stop_probes()


def install_handlers(handler: Callable[[int, FrameType | None], None] = on_signal) -> None:
    """Route SIGINT, SIGTERM and SIGHUP to on_signal (the CLI's; a library user keeps their own),
    and start the forwarder."""
    global _installed
    _installed = handler
    for name in NAMES:
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            # An ignored signal stays ignored (`nohup bisector ...`, a background job's SIGINT).
            if signal.getsignal(sig) != signal.SIG_IGN:
                signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread (bisector called as a library)
            return
    _start_forwarder()


def _start_forwarder() -> None:
    global _forwarder
    if _forwarder is not None:
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # the C handler must never block on it
    try:
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        os.close(read_fd)
        os.close(write_fd)
        return
    main = threading.main_thread().ident
    assert main is not None
    _forwarder = threading.Thread(target=_forward, args=(read_fd, main), name="bisector-signals", daemon=True)
    _forwarder.start()


def _forward(read_fd: int, main: int) -> None:
    """Read the numbers the C handler writes; for a stop signal the main thread has not handled,
    send it on to the main thread (a thread-directed signal interrupts the wait it sleeps in)."""
    global _copies
    stops = {int(getattr(signal, name)) for name in NAMES if hasattr(signal, name)}
    last_sent = 0.0
    seen = _handled  # stop signals the C handler has written since (the baseline: those before)
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:
            return
        received_now = [n for n in data if n in stops]
        if not received_now:
            continue
        seen += len(received_now)
        deadline = time.monotonic() + FORWARD_AFTER_S
        while _handled < seen and time.monotonic() < deadline:
            time.sleep(0.005)
        if not should_forward(seen, _handled, signal.getsignal(received_now[0]), time.monotonic() - last_sent):
            continue
        last_sent = time.monotonic()
        # Two signals the kernel merged run the handler once: count them as the copy's, so one
        # merge does not make every later signal look lost.
        seen = _handled
        _copies += 1
        try:
            signal.pthread_kill(main, received_now[0])
        except OSError:  # the main thread has ended: the process is exiting anyway
            return


def should_forward(seen: int, handled: int, current: object, since_last_s: float) -> bool:
    """Whether the forwarder sends a signal on to the main thread: a stop signal the C handler
    noted (seen) that no handler of ours has run for (handled), while our handler is still the
    one in place (one restored since, by a library caller or a test, is not ours to call), and not
    just after the last copy (the main thread has it pending)."""
    return handled < seen and current is _installed and since_last_s >= FORWARD_EVERY_S


def quiet() -> None:
    """The process is exiting: a further signal is noted and its probes killed, not raised into
    the interpreter's shutdown (a traceback there, instead of the exit code)."""
    install_handlers(_note)


def finish(code: int) -> int:
    """The exit code of a run that ends now: 128+N if a signal came, whatever the run returned
    (typer turns a KeyboardInterrupt outside a command's body into 130; an import the signal cut
    short fails with ImportError). A run whose command did not say it was interrupted gets one
    line saying so."""
    sig = received()
    if sig is None or code == 128 + sig:
        return code
    try:
        sys.stderr.write(f"interrupted ({signal_name(sig)})\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed (a terminal that hung up): the code says it all
        pass
    return 128 + sig
