"""`bisector repair` and `bisector merge`: every model of a project found and fixed, on this
machine, on Ray or in CI shards, and the shards joined into one summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bisector.cli.exit_codes import EXIT_USER
from bisector.cli.flags import (
    AllowChangesOpt,
    BudgetOpt,
    ConfigOpt,
    DebugOpt,
    FailOnOpt,
    FreshOpt,
    JobsOpt,
    JsonOpt,
    QuietOpt,
    VerboseOpt,
)
from bisector.cli.guard import guard
from bisector.cli.probing import runtime_refused
from bisector.cli.render import err_console, set_up_logging

ManifestOpt = Annotated[
    Optional[str],
    typer.Option(
        "--manifest",
        help=(
            'A TOML ([[models]] tables) or JSON ({"models": [...]}) list of models, instead of '
            "pyproject's [[tool.bisector.models]]."
        ),
    ),
]
RepairOutOpt = Annotated[str, typer.Option("--out", help="Where patches, per-model results and the summary go.")]
ModelsAtOnceOpt = Annotated[
    int, typer.Option("--models-at-once", help="Models repaired side by side (they share --jobs probes).")
]
ExecutorOpt = Annotated[
    str,
    typer.Option(
        "--executor",
        help="local (threads on this machine) or ray (one Ray task per model; pip install 'bisector[ray]').",
    ),
]
AddressOpt = Annotated[
    Optional[str],
    typer.Option(
        "--address",
        help=(
            "With --executor ray: the cluster to join (ray://HOST:10001, HOST:6379 or auto). Default: a "
            "Ray started on this machine."
        ),
    ),
]
ShardOpt = Annotated[
    Optional[str],
    typer.Option(
        "--shard",
        help=(
            "I/N: repair only this share of the models (a stable split by name), for CI matrices; join the "
            "outputs with `bisector merge`."
        ),
    ),
]
IndexReportOpt = Annotated[
    Optional[str],
    typer.Option("--report", help="Write an HTML report per model and an index.html over all models into this folder."),
]


def repair(
    config: ConfigOpt = None,
    manifest: ManifestOpt = None,
    out: RepairOutOpt = ".bisector/repair",
    jobs: JobsOpt = None,
    models_at_once: ModelsAtOnceOpt = 2,
    allow_output_changes: AllowChangesOpt = False,
    fresh: FreshOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    shard: ShardOpt = None,
    json_out: JsonOpt = False,
    report_dir: IndexReportOpt = None,
    fail_on: FailOnOpt = None,
    budget: BudgetOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> int:
    """Find and fix every model of a migration project: one patch per model, a summary as JSON
    and a Markdown table. Resumes: models already done (same source, same options) are not probed
    again. Exit 0 when every model is clean or fixed, 1 when a culprit has no kept fix, 2 when a
    model could not be measured."""
    if runtime_refused(None):  # each model's entry names its stages: at most a warning here
        return EXIT_USER

    def body() -> int:
        from bisector import api
        from bisector.options.environment import check_environment

        check_environment()
        set_up_logging(verbose, quiet)
        summary = api.repair(
            config=config,
            manifest=manifest,
            out=out,
            jobs=jobs,
            models_at_once=models_at_once,
            allow_output_changes=allow_output_changes,
            fresh=fresh,
            progress=_model_done_line(json_out or quiet),
            report_dir=report_dir,
            executor=executor,
            address=address,
            shard=shard,
            fail_on=fail_on,
            budget=budget,
        )
        _print_summary(summary, json_out, quiet)
        if not quiet:
            _say_where(summary, report_dir)
        return summary.exit_code

    return guard(debug, body)


def _model_done_line(silent: bool) -> Any:
    """repair's progress callback: one stderr line per model done, with the counts so far."""
    err = err_console()

    def progress(result: Any, state: Any) -> None:
        if not silent:
            err.print(
                f"{result.status:<8} {result.spec}  ({result.wall_s:.0f} s)  "
                f"[{state.done}/{state.total} done, {state.running} running, {state.queued} queued]",
                markup=False,
            )

    return progress


def _say_where(summary: Any, report_dir: str | None) -> None:
    """Where the HTML index and the repro bundles went, after the summary."""
    err = err_console()
    if report_dir:
        err.print(f"report: {Path(report_dir) / 'index.html'}", markup=False, highlight=False)
    bundles = Path(summary.out) / "bundles"
    if bundles.is_dir():
        err.print(f"bundles: {bundles}", markup=False, highlight=False)


def _print_summary(summary: Any, json_out: bool, quiet: bool = False) -> None:
    """The summary table and its count line; -q: the count line alone (repair's verdict line)."""
    if json_out:
        from bisector.common.contract import stamp

        sys.stdout.write(json.dumps(stamp(summary.to_json(), "repair"), indent=2) + "\n")
        return
    if not quiet:
        sys.stdout.write(summary.markdown() + "\n")
    counts = ", ".join(f"{n} {k}" for k, n in summary.counts.items())
    resumed = sum(1 for r in summary.results if r.resumed)
    sys.stdout.write(
        f"{len(summary.results)} models: {counts}"
        + (f" ({resumed} resumed)" if resumed else "")
        + f"; summary in {summary.out}/summary.md\n"
    )


MergeManifestOpt = Annotated[
    Optional[str],
    typer.Option("--manifest", help="The manifest the shards ran from, when not pyproject's [[tool.bisector.models]]."),
]
MergeOutOpt = Annotated[str, typer.Option("--out", help="Where the merged patches, per-model results and summary go.")]


def merge(
    outs: Annotated[
        list[str], typer.Argument(help="The --out folders of `bisector repair --shard I/N` runs.", show_default=False)
    ],
    config: ConfigOpt = None,
    manifest: MergeManifestOpt = None,
    out: MergeOutOpt = ".bisector/repair",
    allow_output_changes: AllowChangesOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> int:
    """Join the outputs of `bisector repair --shard I/N` runs into one: summary.json, summary.md,
    per-model results and the per-file patches composed over every model, the same as one
    unsharded run. Exit codes as for repair."""

    def body() -> int:
        from bisector import api

        summary = api.merge(outs, config=config, manifest=manifest, out=out, allow_output_changes=allow_output_changes)
        _print_summary(summary, json_out)
        return summary.exit_code

    return guard(debug, body)
