"""What every probing command (measure, find, fix) shares: the options `@probing` adds to its
signature, parsed into one prepare.Options (what to measure) and one Output (how to show it), and
the run prepared from them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from bisector.cli.exit_codes import EXIT_USER
from bisector.cli.flags import (
    AutogradOpt,
    BudgetOpt,
    BundleOpt,
    ConfigOpt,
    DebugOpt,
    DeviceOpt,
    DimOpt,
    ExporterOpt,
    ExportScriptOpt,
    FailOnOpt,
    FloorOpt,
    FreshOpt,
    InferScriptOpt,
    InitOpt,
    InputOpt,
    JobsOpt,
    JsonOpt,
    MemCapOpt,
    MetricOpt,
    NoCacheOpt,
    NoiseGpuOpt,
    NoiseRssOpt,
    QuietOpt,
    ReportOpt,
    RetriesOpt,
    RunDirOpt,
    SeedOpt,
    StageOpt,
    TimeoutOpt,
    TraceOpt,
    VerboseOpt,
)
from bisector.cli.progress_display import ProgressDisplay
from bisector.cli.render import err_console, esc, set_up_logging

SHARED: dict[str, tuple[Any, Any]] = {
    "input": (InputOpt, None),
    "dim": (DimOpt, None),
    "stage": (StageOpt, None),
    "exporter": (ExporterOpt, None),
    "jobs": (JobsOpt, None),
    "json_out": (JsonOpt, False),
    "init_kwargs": (InitOpt, None),
    "device": (DeviceOpt, None),
    "seed": (SeedOpt, None),
    "fresh": (FreshOpt, False),
    "timeout": (TimeoutOpt, None),
    "mem_cap": (MemCapOpt, None),
    "noise_rss": (NoiseRssOpt, None),
    "noise_gpu": (NoiseGpuOpt, None),
    "metric": (MetricOpt, None),
    "retries": (RetriesOpt, None),
    "keep_autograd": (AutogradOpt, False),
    "tracemalloc": (TraceOpt, False),
    "floor": (FloorOpt, None),
    "no_cache": (NoCacheOpt, False),
    "run_dir": (RunDirOpt, None),
    "config": (ConfigOpt, None),
    "report_dir": (ReportOpt, None),
    "bundle_dir": (BundleOpt, None),
    "debug": (DebugOpt, False),
    "export_script": (ExportScriptOpt, None),
    "infer_script": (InferScriptOpt, None),
    "fail_on": (FailOnOpt, None),
    "budget": (BudgetOpt, None),
    "verbose": (VerboseOpt, 0),
    "quiet": (QuietOpt, False),
}


@dataclass(frozen=True)
class Output:
    """How a command shows what it found."""

    json: bool = False
    report_dir: str | None = None
    bundle_dir: str | None = None
    debug: bool = False
    fail_on: Any = None  # fail_on.FailOn: which findings exit 1
    budget: float | None = None  # --budget in bytes (None: the config's, if any)
    verbose: int = 0
    quiet: bool = False

    def progress(self) -> ProgressDisplay:
        return ProgressDisplay(bar=sys.stderr.isatty() and not self.debug and not self.quiet, lines=not self.quiet)


def _options(v: dict[str, Any]) -> Any:
    from bisector.pipeline.prepare import Options

    return Options(
        inputs=tuple(v["input"] or ()),
        dims=tuple(v["dim"] or ()),
        stages=_stages(v),
        exporter=_value(v["exporter"]),
        device=_value(v["device"]),
        init_kwargs=v["init_kwargs"],
        seed=v["seed"],
        jobs=v["jobs"],
        fresh=v["fresh"],
        timeout_s=v["timeout"],
        mem_cap=v["mem_cap"],
        noise_rss=v["noise_rss"],
        noise_gpu=v["noise_gpu"],
        metric=_value(v["metric"]),
        retries=v["retries"],
        keep_autograd=v["keep_autograd"],
        tracemalloc=v["tracemalloc"],
        floor=tuple(v["floor"]) if v["floor"] else None,
        cache=not v["no_cache"],
        config=v["config"],
        run_dir=v["run_dir"],
        export_script=v["export_script"],
        infer_script=v["infer_script"],
    )


def _stages(v: dict[str, Any]) -> tuple[str, ...] | None:
    """The stages --stage or BISECTOR_STAGE named (typer reads both); None when neither did."""
    return tuple(_value(s) for s in v["stage"]) if v["stage"] else None


def _value(choice: Any) -> Any:
    return choice.value if isinstance(choice, Enum) else choice


def _output(given: dict[str, Any]) -> Output | None:
    """The parsed Output; None after one error line when a BISECTOR_* variable, --fail-on or
    --budget is malformed (exit 2)."""
    from bisector.common.errors import UserError
    from bisector.judge.fail_on import FailOn, parse_budget
    from bisector.options.environment import check_environment

    try:
        check_environment()  # a bad BISECTOR_* is an error even where a flag overrides it
        fail_on = FailOn.parse(given["fail_on"]) if given["fail_on"] else None  # None: the config's
        budget = parse_budget(given["budget"])  # None: the config's
    except UserError as exc:
        err_console().print(f"[bold red]error:[/] {esc(str(exc))}")
        return None
    return Output(
        json=given["json_out"],
        report_dir=given["report_dir"],
        bundle_dir=given["bundle_dir"],
        debug=given["debug"],
        fail_on=fail_on,
        budget=budget,
        verbose=given["verbose"],
        quiet=given["quiet"],
    )


def runtime_refused(stages: tuple[str, ...] | None) -> bool:
    """One line before a probing command when ONNX Runtime is missing (an error, and True: exit 2,
    if a stage named on the command line needs it) or installed twice over (a warning): the probes
    would otherwise fail with a long traceback. stages: those named (empty: none), or None for
    repair, whose stages each model's entry names."""
    from bisector.options.runtime_check import named_stages_problem

    problem = named_stages_problem(stages)
    if problem is None:
        return False
    line, fatal = problem
    sys.stderr.write(f"{'error' if fatal else 'warning'}: {line}\n")
    return fatal


def probing(fn: Callable[..., int]) -> Callable[..., int]:
    """Give a command the shared options: typer sees them in the signature; the command receives
    `options` (prepare.Options) and `output` (Output) instead."""
    import functools
    import inspect

    own = [p for n, p in inspect.signature(fn, eval_str=True).parameters.items() if n not in ("options", "output")]
    shared = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, (a, d) in SHARED.items()
    ]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> int:
        given = {n: kwargs.pop(n) for n in SHARED}
        if runtime_refused(_stages(given) or ()):
            return EXIT_USER
        output = _output(given)
        if output is None:
            return EXIT_USER
        set_up_logging(output.verbose, output.quiet)
        return fn(options=_options(given), output=output, **kwargs)

    params = own + shared
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    del command.__wrapped__  # typer must read the signature above, not fn's
    return command


def prepared_run(spec: str, options: Any, output: Output) -> tuple[Any, Any]:
    """The run prepared from the options, then what the first minute owes the user: the inputs
    when they were inferred (one stderr line, as flags to copy), a missing ONNX Runtime when a stage
    needs it (the stages are known only now, [tool.bisector] included), and the --fail-on policy:
    the flag's or variable's, else [tool.bisector]'s, else the default (--budget likewise)."""
    from bisector.common.errors import UserError
    from bisector.judge.fail_on import FailOn
    from bisector.options.runtime_check import stages_problem
    from bisector.pipeline.prepare import prepare

    prepared = prepare(spec, options)
    if prepared.inferred is not None and not output.quiet:
        err_console().print(prepared.inferred.describe(), markup=False)
    problem = stages_problem(prepared.options.stages)
    if problem:
        raise UserError(problem)
    policy = output.fail_on or FailOn.parse(prepared.config.get("fail_on"))
    return prepared, policy.with_budget(output.budget if output.budget is not None else prepared.config.get("budget"))


def check_output_folders(options: Any, output: Output, keeps_run: bool) -> None:
    """The folders the command will write, refused now if it could not (issue 19): not after
    every probe has run. keeps_run: the command keeps its run in ./.bisector when no --run-dir."""
    from bisector.store.outputs import check_outputs

    run_dir = options.run_dir or (str(Path.cwd() / ".bisector") if keeps_run else None)
    check_outputs((run_dir, "--run-dir"), (output.report_dir, "--report"), (output.bundle_dir, "--bundle"))
