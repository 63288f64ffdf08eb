"""The exit codes (cli/__init__.py's docstring says what each means) and the one each outcome gets."""

from __future__ import annotations

EXIT_CLEAN, EXIT_FOUND, EXIT_USER, EXIT_INTERNAL, EXIT_UNPROVEN = 0, 1, 2, 3, 4

EXIT_BY_STATUS = {
    "clean": EXIT_CLEAN,
    "fixed": EXIT_CLEAN,
    "unfixed": EXIT_FOUND,
    "unproven": EXIT_UNPROVEN,
    "error": EXIT_USER,
}
