"""`bisector find`: each stage measured, then the module tree bisected down to the culprits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bisector.cli.exit_codes import EXIT_BY_STATUS
from bisector.cli.flags import Spec
from bisector.cli.guard import RunState, guard
from bisector.cli.probing import check_output_folders, prepared_run, probing
from bisector.cli.render import disk_note, emit, out_console, said, with_inferred, write_report_files


@probing
def find(spec: Spec, options: Any = None, output: Any = None) -> int:
    """Measure each stage, then bisect the module tree down to the smallest regions that leak
    (or grow per new input shape), with figures and what to try next for each."""
    state = RunState()

    def body() -> int:
        from bisector.find.localise import find as run_find
        from bisector.pipeline.failures import failure_error
        from bisector.pipeline.run import find_status
        from bisector.reports.terminal import find_verdict_line, render_find

        check_output_folders(options, output, keeps_run=True)
        prepared, fail_on = prepared_run(spec, options, output)
        state.run_dir = str(Path(options.run_dir) if options.run_dir else Path.cwd() / ".bisector")
        with output.progress() as progress:
            report = run_find(prepared.model, prepared.plan, prepared.options, events=progress, run_dir=options.run_dir)
        extra, lines = write_report_files(report, output.report_dir, output.bundle_dir)
        if output.json:
            emit(with_inferred({**report.to_json(), **extra}, prepared), "find")
        elif output.quiet:
            out_console().print(find_verdict_line(report))
        else:
            render_find(report, out_console())
        said(lines, output)
        disk_note(state.run_dir, output)
        error = failure_error(report.measure)
        if error is not None:
            raise error
        return EXIT_BY_STATUS[find_status(report, fail_on).value]

    return guard(output.debug, body, state)
