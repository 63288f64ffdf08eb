"""`bisector clean`: what bisector keeps on disk, listed with sizes and ages, and removed on ask."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bisector.cli.exit_codes import EXIT_CLEAN, EXIT_USER
from bisector.cli.flags import DebugOpt, JsonOpt, RunDirOpt
from bisector.cli.guard import guard

RemoveOpt = Annotated[bool, typer.Option("--remove", help="Remove what is listed as to go (else nothing is removed).")]
KeepDaysOpt = Annotated[
    Optional[float], typer.Option("--keep-days", help="Only what has not changed for more than N days goes.")
]
MaxSizeOpt = Annotated[
    Optional[str], typer.Option("--max-size", help="Oldest first, until the rest fits in SIZE (e.g. 2GB).")
]
BackupsOpt = Annotated[bool, typer.Option("--backups", help="Also the backups --apply made (never otherwise).")]
KeepControlsOpt = Annotated[
    bool,
    typer.Option(
        "--keep-controls",
        help="Keep the global control cache (shared by every project; re-measuring it costs a probe per stage).",
    ),
]


def clean_command(
    run_dir: RunDirOpt = None,
    remove: RemoveOpt = False,
    keep_days: KeepDaysOpt = None,
    max_size: MaxSizeOpt = None,
    backups: BackupsOpt = False,
    keep_controls: KeepControlsOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> int:
    """List the control cache and the run directory's runs, captures, repair output and backups,
    with sizes and ages; with --remove, delete them (all, or past --keep-days / --max-size)."""

    def body() -> int:
        import time

        from bisector.common.errors import UserError
        from bisector.common.units import parse_size
        from bisector.lab.stage import RUN_DIR
        from bisector.store.caches import default_cache_dir
        from bisector.store.clean import clean

        if keep_days is not None and keep_days < 0:
            raise UserError("--keep-days must be 0 or more")
        cap = parse_size(max_size, "--max-size") if max_size is not None else None
        now = time.time()
        root = Path(run_dir) if run_dir else Path.cwd() / RUN_DIR
        outcomes = clean(
            root,
            default_cache_dir(),
            keep_days,
            cap,
            backups=backups,
            delete=remove,
            now=now,
            controls=not keep_controls,
        )
        if json_out:
            rows = [o.to_json(now) for o in outcomes]
            sys.stdout.write(json.dumps({"entries": rows, "removed": remove}, indent=2) + "\n")
        else:
            _print_table(outcomes, remove, now)
        # What could not be removed is listed with why (a permission, a file in use): the user's to
        # look at, not a failure of bisector.
        return EXIT_USER if any(o.error for o in outcomes) else EXIT_CLEAN

    return guard(debug, body)


def _print_table(outcomes: list[Any], remove: bool, now: float) -> None:
    """One line per entry (kind, size, age, what happens to it, path), then the totals."""
    from bisector.common.units import format_bytes
    from bisector.store.clean import FOREIGN

    for o in outcomes:
        e, mark = o.entry, "not bisector's" if o.entry.kind == FOREIGN else "kept"
        if o.selected:
            mark = "removed" if o.removed else f"kept: {o.error}" if o.error else "to go"
        age = f"{e.age_days(now):7.1f} d"
        sys.stdout.write(f"{e.kind:<13} {format_bytes(e.size):>9} {age}  {mark:<8} {e.path}\n")
    foreign = sum(1 for o in outcomes if o.entry.kind == FOREIGN)
    if foreign:
        sys.stdout.write(f"{foreign} not bisector's: bisector cannot prove it wrote them, so they are never removed\n")
    freed = sum(o.entry.size for o in outcomes if (o.removed if remove else o.selected))
    total = sum(o.entry.size for o in outcomes)
    verb = "removed" if remove else "would remove"
    hint = " (rerun with --remove)" if freed and not remove else ""
    sys.stdout.write(f"{len(outcomes)} entries, {format_bytes(total)}; {verb} {format_bytes(freed)}{hint}\n")
