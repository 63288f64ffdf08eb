"""Signals that stop bisector wait for the few steps that must not be cut in half.

The CLI turns SIGINT, SIGTERM and SIGHUP into KeyboardInterrupt (after killing every probe). One
raised between renaming a file into place and noting it as written would make the report say
"--apply wrote nothing" about a file it did write; inside ``deferred()`` the exception waits
until the step is done.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_state = threading.local()


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
