"""`bisector report`: the HTML report rendered again from stored results."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bisector.cli.exit_codes import EXIT_CLEAN
from bisector.cli.flags import DebugOpt
from bisector.cli.guard import guard
from bisector.cli.render import err_console


def report_command(
    run_dir: Annotated[
        str,
        typer.Argument(
            help="A run directory (.bisector, .bisector/runs/...), a --report folder or a repair --out folder.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Optional[str], typer.Option("--out", help="Where to write the HTML. Default: beside the stored results.")
    ] = None,
    debug: DebugOpt = False,
) -> int:
    """Render the HTML report again from stored results: no probe runs."""

    def body() -> int:
        from bisector.reports.html import rerender
        from bisector.store.outputs import check_outputs

        check_outputs((out, "--out"))
        for page in rerender(run_dir, out):
            err_console().print(f"report: {page}", markup=False, highlight=False)
        return EXIT_CLEAN

    return guard(debug, body)
