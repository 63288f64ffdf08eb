"""One shape for every renderer of a report, in the manner of memray's ``reporters/``.

A reporter is built from the data by a class method named for what it reads (``from_report`` for
the library's reports, ``from_document`` for a stored report document, ``from_summary`` for
repair's summary, ``from_target`` for a repro bundle's target): that is where the work is done
that may be slow or may fail (charts, lookups). ``render(out)`` then writes it to a sink the caller
chooses, and does nothing else: the terminal reports print to a rich Console, the HTML pages and
the bundle's ISSUE.md write text to a file-like object. So a front end (the CLI, repair, the
pytest plugin) picks the reporter and the sink, and every renderer is tested the same way: build
it from made-up data, render it into a buffer.
"""

from __future__ import annotations

import io
from typing import Protocol, TextIO, TypeVar, runtime_checkable

Out = TypeVar("Out", contravariant=True)


@runtime_checkable
class Reporter(Protocol[Out]):
    """Anything that renders one report into a sink of type Out (a rich Console, a TextIO)."""

    def render(self, out: Out) -> None: ...


def render_text(reporter: Reporter[TextIO]) -> str:
    """What a text reporter writes, as a string (for a file written at once, or a test)."""
    buffer = io.StringIO()
    reporter.render(buffer)
    return buffer.getvalue()
