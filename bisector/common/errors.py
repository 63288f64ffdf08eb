"""Errors that reach the user. Each carries one line that says what failed and what to try."""

from __future__ import annotations


class BisectorError(Exception):
    """Base of the errors the CLI renders as one line."""

    exit_code = 3


class UserError(BisectorError):
    """Bad input from the user: a spec, a file, a model that cannot run or export (exit 2)."""

    exit_code = 2

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        # detail: e.g. the tail of the user's own traceback, shown under the one line.
        self.detail = detail


class InternalError(BisectorError):
    """A failure of bisector itself (exit 3)."""

    exit_code = 3
