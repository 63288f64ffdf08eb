"""The command line: parses options, calls the library, renders. Nothing else lives here.

Exit codes: 0 clean or fixed (a toolchain-leak, growth torch or ONNX Runtime own, is reported apart) ·
1 a finding --fail-on lists (default: leak, shape-growth) found, or not fixed · 2 user error ·
3 internal error · 4 not proven either way (inconclusive after retries, or a probe crashed or timed out).

root.py holds the typer app, entry.py main(), commands/ one module per command (registered in
commands/__init__.py); flags.py the options several commands share, probing.py what measure, find
and fix share (@probing, Output, the run prepared), guard.py the errors and signals turned into exit
codes, render.py and progress_display.py what goes to the terminal.
"""

from __future__ import annotations

from bisector.cli.entry import main
from bisector.cli.exit_codes import (
    EXIT_BY_STATUS,
    EXIT_CLEAN,
    EXIT_FOUND,
    EXIT_INTERNAL,
    EXIT_UNPROVEN,
    EXIT_USER,
)
from bisector.cli.root import app

__all__ = ["EXIT_BY_STATUS", "EXIT_CLEAN", "EXIT_FOUND", "EXIT_INTERNAL", "EXIT_UNPROVEN", "EXIT_USER", "app", "main"]
