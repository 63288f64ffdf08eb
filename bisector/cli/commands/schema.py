"""`bisector schema`: the JSON Schema of the reports."""

from __future__ import annotations

import sys

from bisector.cli.exit_codes import EXIT_CLEAN


def schema_command() -> int:
    """Print the JSON Schema every --json report and stored report follows (schema_version in
    each report says which)."""
    from bisector.common.contract import schema_text

    sys.stdout.write(schema_text())
    return EXIT_CLEAN
