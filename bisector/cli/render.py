"""What the commands share for the terminal: the stdout and stderr consoles, bisector's log on
stderr, JSON on stdout, and the lines said after a report (where it wrote, the run's disk use)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bisector.cli.probing import Output


def err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def out_console() -> Any:
    """Reports on stdout; in a pipe or a CI log, wide enough that tree lines are not cut."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def set_up_logging(verbose: int, quiet: bool) -> None:
    """bisector's log to stderr: warnings by default, -v info (each stage's reasons, each probe's
    outcome, a crashed probe's stderr in full), -vv debug (probes reused, probe servers), -q errors
    only."""
    import logging

    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("bisector")
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def emit(data: dict[str, Any], kind: str) -> None:
    """A report on stdout as JSON, stamped with the schema version and the versions it ran with."""
    from bisector.common.contract import stamp

    sys.stdout.write(json.dumps(stamp(data, kind), indent=2) + "\n")


def with_inferred(data: dict[str, Any], prepared: Any) -> dict[str, Any]:
    """--json says when the inputs were inferred, and what they were."""
    if prepared.inferred is not None:
        data["inputs_inferred"] = prepared.inferred.to_json()
    return data


def write_report_files(
    report: Any, report_dir: str | None, bundle_dir: str | None, patches: Any = ()
) -> tuple[dict[str, Any], list[str]]:
    """HTML report and repro bundles when asked; find/fix keep the report document in their run
    directory either way (for `bisector report`). Returns what --json gains, and the lines saying
    where it wrote (printed by said() after the report, where a person looks last)."""
    from bisector.reports.artifacts import write_artifacts

    lines: list[str] = []
    return write_artifacts(report, report_dir, bundle_dir, patches, say=lines.append), lines


def said(lines: list[str], output: Output | None = None) -> None:
    if output is not None and output.quiet:
        return  # -q: the verdict line and errors only
    err = err_console()
    for line in lines:
        err.print(line, markup=False, highlight=False)


DISK_NOTE_BYTES = 100 * 1000**2  # a run directory past this is worth a line at the end


def disk_note(run_root: str | None, output: Output) -> None:
    """One stderr line at the end when the run directory holds more than 100 MB: what it holds and
    how to free it (issue 25: a user found 2.6 GB only by running `bisector clean`)."""
    if run_root is None or output.quiet or output.json:
        return
    from bisector.common.units import format_bytes
    from bisector.store.clean import entries

    held = sum(e.size for e in entries(Path(run_root), None))
    if held > DISK_NOTE_BYTES:
        err_console().print(
            f"disk: {run_root} holds {format_bytes(held)} (`bisector clean` lists it, `--remove` frees it)",
            markup=False,
            highlight=False,
        )
