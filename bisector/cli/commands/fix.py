"""`bisector fix`: the culprits found, every fixer that applies tried on each, the kept fixes
shown, as a diff, or written with --apply."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Annotated, Any, Optional

import typer

from bisector.cli.commands.fixers import fixer_names
from bisector.cli.exit_codes import EXIT_BY_STATUS
from bisector.cli.flags import AllowChangesOpt, Spec
from bisector.cli.guard import RunState, guard, stopped
from bisector.cli.probing import Output, check_output_folders, prepared_run, probing
from bisector.cli.render import disk_note, emit, out_console, said, with_inferred, write_report_files

FixerOpt = Annotated[
    Optional[list[str]], typer.Option("--fixer", help="Only this fixer (repeatable); see `bisector fixers`.")
]
DiffOpt = Annotated[
    bool,
    typer.Option(
        "--diff", help="Print the kept fixes as a unified diff (patch -p1 / git apply from the project root)."
    ),
]
ApplyOpt = Annotated[
    bool,
    typer.Option(
        "--apply",
        help=(
            "Write the diff to the files (atomically, with backups, only files unchanged since analysis and "
            "inside the project), then re-measure."
        ),
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="With --apply: also replace files that are read-only.")]
PickOpt = Annotated[
    Optional[int],
    typer.Option(
        "--pick",
        help="Patch with the N-th kept fix of each culprit (1 = the best ranked) instead of the default choice.",
    ),
]


@probing
def fix(
    spec: Spec,
    fixer: FixerOpt = None,
    allow_output_changes: AllowChangesOpt = False,
    diff: DiffOpt = False,
    apply: ApplyOpt = False,
    force: ForceOpt = False,
    pick: PickOpt = None,
    options: Any = None,
    output: Any = None,
) -> int:
    """Find the culprits, try every fixer that applies to each, re-measure, and report the fixes
    that make the curve flat and keep outputs equivalent, with before/after figures."""
    state = RunState(apply=apply)

    def body() -> int:
        from bisector.pipeline import run as pipeline
        from bisector.reports.terminal import render_find

        request = pipeline.FixRequest(
            fixers=tuple(fixer or ()),
            allow_output_changes=allow_output_changes,
            pick=pick,
            apply=apply,
            force=force,
        )
        # Refused now, not after minutes of probing.
        root = pipeline.check_request(spec, options, request, fixer_names())
        check_output_folders(options, output, keeps_run=False)  # the run directory: check_request's
        prepared, fail_on = prepared_run(spec, options, output)
        request = replace(request, fail_on=fail_on)

        def show_found(found: Any) -> None:
            if not output.json and not output.quiet:
                # The find report is ready long before the fixes are measured: show it now.
                render_find(found, out_console())
                sys.stdout.flush()

        def on_run_dir(path: str) -> None:
            state.run_dir = path
            state.backups = str(root / ".bisector" / "backups")

        with output.progress() as progress:
            hooks = pipeline.FixCallbacks(
                events=progress, on_run_dir=on_run_dir, on_found=show_found, written=state.written
            )
            outcome = pipeline.fix(prepared, request, hooks, root=root, stopped=stopped)
        _show_outcome(outcome, prepared, output, diff, apply)
        disk_note(state.run_dir, output)
        return EXIT_BY_STATUS[outcome.status.value]

    return guard(output.debug, body, state)


def _show_outcome(outcome: Any, prepared: Any, output: Output, diff: bool, apply: bool) -> None:
    """The fix report as JSON, its verdict line (-q) or in full, then where it was written."""
    from bisector.reports.terminal import fix_verdict_line

    data = outcome.to_json()
    extra, lines = write_report_files(outcome.report, output.report_dir, output.bundle_dir, data["patches"])
    data.update(extra)
    if output.json:
        emit(with_inferred(data, prepared), "fix")
    elif output.quiet and not diff:
        out_console().print(fix_verdict_line(outcome.report))
    else:
        _render_fix(outcome, diff, apply)
    said(lines, output)


def _render_fix(outcome: Any, diff: bool, apply: bool) -> None:
    from bisector.patching.diff import combined_diff_bytes
    from bisector.reports.terminal import render_fix

    console = out_console()
    render_fix(outcome.report, console, show_find=False)
    for note in outcome.notes:
        console.print(f"note: {note}", style="yellow", markup=False)
    for stage, why in outcome.stage_errors.items():
        console.print(
            f"{stage} could not run ({why}); the other stages were found and fixed", style="red", markup=False
        )
    patches = outcome.patches
    if diff:
        data = combined_diff_bytes(patches)
        if data:
            # As bytes, past rich (which drops "\r"): each file's own line endings and encoding,
            # so the printed diff applies with `patch` and `git apply`.
            sys.stdout.flush()
            raw = getattr(sys.stdout, "buffer", None)  # None when a caller swapped stdout for a text stream
            if raw is None:
                sys.stdout.write(data.decode("utf-8", "replace"))
            else:
                raw.write(data)
                raw.flush()
        else:
            console.print("(no changes to show)")
    elif patches and any(p.changed for p in patches) and not apply:
        console.print("rerun with --diff to see the patch, --apply to write it", style="cyan")
    if outcome.applied:
        console.print(f"applied: {', '.join(outcome.applied)} (backups in {outcome.backups})", markup=False)
    if patches:
        console.print(f"check: {outcome.check}", markup=False)
    if outcome.check_after_apply:
        console.print(f"check after --apply: {outcome.check_after_apply}", markup=False)
    if outcome.confirmed is not None:
        parts = ", ".join(f"{s} {r.kind}" for s, r in outcome.confirmed.stages.items())
        console.print(f"re-measured after --apply (edited files, kept runtime settings): {parts}", markup=False)
