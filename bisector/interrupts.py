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

Kept light on purpose (stdlib only, nothing imported at call time): it is imported first.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_state = threading.local()
NAMES = ("SIGINT", "SIGTERM", "SIGHUP")
# Signals received, in order: the exit code is 128 + the first.
SIGNALS: list[int] = []


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


def on_signal(signum: int, frame: Any) -> None:
    """Stop at once: kill every probe (whole process trees) and probe server, remove the
    temporary folders, then unwind as Ctrl-C does, so what finished is kept and reported.
    Without this, SIGTERM left --fresh children running with no timeout or cap, and Ctrl-C
    waited for the running probe's timeout."""
    SIGNALS.append(signum)
    stop_probes()
    if deferring():  # a file being put in place: raise once it is done and noted
        defer(signum)
        return
    raise KeyboardInterrupt


def _note(signum: int, frame: Any) -> None:
    SIGNALS.append(signum)
    stop_probes()


def install_handlers(handler: Any = on_signal) -> None:
    """Route SIGINT, SIGTERM and SIGHUP to on_signal (the CLI's; a library user keeps their own)."""
    for name in NAMES:
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            # An ignored signal stays ignored (`nohup bisector ...`, a background job's SIGINT).
            if signal.getsignal(sig) != signal.SIG_IGN:
                signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread (bisector called as a library)
            pass


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
