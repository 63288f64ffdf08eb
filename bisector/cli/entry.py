"""The console entry point: the commands run, usage errors and signals turned into exit codes."""

from __future__ import annotations

import sys

import typer

import bisector.cli.commands  # noqa: F401 - registers every command on the app
from bisector.cli.exit_codes import EXIT_CLEAN, EXIT_INTERNAL, EXIT_USER
from bisector.cli.root import app


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors become one line and exit 2, like ours; a signal, wherever
    it lands (parsing, an import, a command), exits with 128+N (bisector/common/interrupts.py)."""
    from bisector.common import interrupts

    interrupts.install_handlers()  # already done by bisector.__main__; again for callers of main()
    try:
        code = _main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - e.g. an ImportError a signal caused: the signal is the outcome
        if interrupts.received() is None:
            raise
        code = EXIT_INTERNAL
    try:
        code = interrupts.finish(code)
    except KeyboardInterrupt:  # a second signal while the first is reported: the first decides
        code = interrupts.exit_code()
    sys.exit(code)


def _main(argv: list[str] | None) -> int:
    try:
        code = app(args=argv, prog_name="bisector", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        # A KeyboardInterrupt without a signal: input ended (typer.Abort) or Ctrl-C in a caller
        # that kept Python's own handler.
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as exc:  # noqa: BLE001
        ctx = getattr(exc, "ctx", None)
        if _is(exc, "NoArgsIsHelpError") and ctx is not None:
            sys.stdout.write(ctx.get_help() + "\n")
            return EXIT_CLEAN
        if _is(exc, "UsageError"):
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            sys.stderr.write(f"error: {exc.format_message()}{hint}\n")
            return EXIT_USER
        raise
    return code if isinstance(code, int) else 0


def _is(exc: BaseException, name: str) -> bool:
    # typer vendors its own click, whose exception classes are private; match them by name.
    return any(c.__name__ == name for c in type(exc).__mro__)
