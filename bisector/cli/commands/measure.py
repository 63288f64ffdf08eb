"""`bisector measure`: each stage measured, and its verdict."""

from __future__ import annotations

from typing import Any

from bisector.cli.exit_codes import EXIT_BY_STATUS
from bisector.cli.flags import Spec
from bisector.cli.guard import guard
from bisector.cli.probing import check_output_folders, prepared_run, probing
from bisector.cli.render import emit, out_console, said, with_inferred, write_report_files


@probing
def measure(spec: Spec, options: Any = None, output: Any = None) -> int:
    """Measure memory per stage (eager, export, inference) in isolated probes and give a verdict:
    clean, leak (grows every call), shape-growth (grows per new input shape) or inconclusive."""

    def body() -> int:
        from bisector.lab.measure import measure as run_measure
        from bisector.pipeline.failures import failure_error
        from bisector.pipeline.run import measured_status
        from bisector.reports.terminal import measure_verdict_line, render_measure

        check_output_folders(options, output, keeps_run=False)
        prepared, fail_on = prepared_run(spec, options, output)
        with output.progress() as progress:
            report = run_measure(
                prepared.model, prepared.plan, prepared.options, events=progress, run_dir=options.run_dir
            )
        extra, lines = write_report_files(report, output.report_dir, output.bundle_dir)
        if output.json:
            emit(with_inferred({**report.to_json(), **extra}, prepared), "measure")
        elif output.quiet:
            out_console().print(measure_verdict_line(report))
        else:
            render_measure(report, out_console())
        said(lines, output)
        error = failure_error(report)
        if error is not None:
            raise error
        return EXIT_BY_STATUS[measured_status(report, fail_on).value]

    return guard(output.debug, body)
