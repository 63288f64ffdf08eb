"""BISECTOR_* environment variables, checked up front as their flags are.

The command line reads a variable only when its flag is not given, so a bad one went unnoticed
while a flag covered it (and broke the next run without the flag), and BISECTOR_CAPTURE_CAP fell
back to its default without a word. Every variable bisector reads is checked here before any
probe, with the same one line and exit 2 as a bad flag. Which variables, the flags they stand for
and their checks come from the option table (table.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from bisector.common.errors import UserError
from bisector.options.table import environment_checks

# Variable -> (the flag it stands for, its check). Paths (BISECTOR_RUN_DIR, BISECTOR_CONFIG,
# BISECTOR_CACHE) are checked where they are used, with the flags they stand for.
CHECKS: Mapping[str, tuple[str, Callable[[str], str | None]]] = environment_checks()


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Raise UserError for the first BISECTOR_* variable that is set to something its flag refuses.
    An empty variable is unset, as click takes it."""
    environ = os.environ if environ is None else environ
    for name, (flag, check) in CHECKS.items():
        text = environ.get(name, "")
        if not text:
            continue
        problem = check(text.strip())
        if problem:
            raise UserError(f"{name}={text!r}: {flag} {problem}; fix or unset the variable")
