"""A command body's outcome as an exit code: bisector's errors become one line, never a
traceback, and a signal says what was stopped and what was kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bisector.cli.exit_codes import EXIT_INTERNAL
from bisector.cli.render import err_console, esc, indent


@dataclass
class RunState:
    """What an interrupted command tells the user: where finished work is kept and what --apply
    had written. Mutable on purpose: the command body fills it in as it goes."""

    run_dir: str | None = None
    apply: bool = False
    written: list[str] = field(default_factory=list)
    backups: str | None = None


def stopped() -> bool:
    from bisector.common import interrupts

    return interrupts.received() is not None


def _interrupted(state: RunState | None) -> int:
    from bisector.common import interrupts

    code = interrupts.exit_code()
    err = err_console()
    err.print(f"interrupted ({interrupts.signal_name(code - 128)}): running probes stopped", markup=False)
    if state is not None and state.run_dir:
        err.print(f"finished probes are kept in {state.run_dir}; run the same command again to resume", markup=False)
    if state is not None and state.written:
        err.print(f"--apply had written {', '.join(state.written)} (backups in {state.backups})", markup=False)
    elif state is not None and state.apply:
        err.print("--apply wrote nothing", markup=False)
    return code


def guard(debug: bool, body: Callable[[], int], state: RunState | None = None) -> int:
    """Run a command body: our errors become one line and an exit code, never a traceback."""
    from bisector.common import interrupts
    from bisector.common.errors import BisectorError

    try:
        code = body()
        # find keeps what finished when stopped and prints it; the exit code still says so.
        return _interrupted(state) if interrupts.received() is not None else code
    except KeyboardInterrupt:
        return _interrupted(state)
    except BisectorError as exc:
        # An error the stop itself caused (a killed probe server): report the stop.
        if interrupts.received() is not None:
            return _interrupted(state)
        if debug:
            raise
        err = err_console()
        err.print(f"[bold red]error:[/] {esc(str(exc))}")
        detail = getattr(exc, "detail", "")
        if detail:
            err.print(esc(indent(detail)), style="dim")
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the promise: no traceback without --debug
        if interrupts.received() is not None:
            return _interrupted(state)
        if debug:
            raise
        err_console().print(
            f"[bold red]internal error:[/] {esc(type(exc).__name__)}: {esc(str(exc))} (rerun with --debug "
            "for the traceback)"
        )
        return EXIT_INTERNAL
