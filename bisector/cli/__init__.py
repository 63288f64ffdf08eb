"""The command line: parses options, calls the library, renders. Nothing else lives here.

Exit codes: 0 clean or fixed (a toolchain-leak, growth torch or ONNX Runtime own, is reported apart) ·
1 a finding --fail-on lists (default: leak, shape-growth) found, or not fixed · 2 user error ·
3 internal error · 4 not proven either way (inconclusive after retries, or a probe crashed or timed out).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bisector import __version__
from bisector.common.contract import stamp
from bisector.model.choices import DEVICES, EXPORTERS, METRICS, STAGES

EXIT_CLEAN, EXIT_FOUND, EXIT_USER, EXIT_INTERNAL, EXIT_UNPROVEN = 0, 1, 2, 3, 4

app = typer.Typer(
    name="bisector",
    help="Find and repair memory leaks where PyTorch meets ONNX: eager forward, torch.onnx.export, ONNX Runtime.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# -- options shared by the commands that measure ------------------------------------------------
# Choices are enums so --help lists them and a typo is a usage error (exit 2) naming the choices.
Stage = Enum("Stage", [(s, s) for s in STAGES], type=str)  # type: ignore[misc]
Exporter = Enum("Exporter", [(e, e) for e in EXPORTERS], type=str)  # type: ignore[misc]
Device = Enum("Device", [(d, d) for d in DEVICES], type=str)  # type: ignore[misc]
Metric = Enum("Metric", [(m, m) for m in METRICS], type=str)  # type: ignore[misc]
# The common options can also come from BISECTOR_* environment variables (a flag wins over the
# variable, the variable over [tool.bisector]).
Spec = Annotated[
    str,
    typer.Argument(
        help="The model: path/to/model.py:Name (an nn.Module class, a factory, or an instance).", show_default=False
    ),
]
InputOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--input",
        "-i",
        help=(
            "A forward argument, in order: NAME=D1,D2,...[:DTYPE[:LOW:HIGH]], dims are integers or symbols "
            "(x=B,3,H,W; ids=B,T:int64:0:1000)."
        ),
    ),
]
DimOpt = Annotated[
    Optional[list[str]],
    typer.Option("--dim", "-d", help="Range of a symbol: SYM=MIN:MAX (or SYM=N). Defaults: B 1:16, others 5:100."),
]
StageOpt = Annotated[
    Optional[list[Stage]],
    typer.Option("--stage", "-s", help="A stage to measure (repeatable). Default: all three.", envvar="BISECTOR_STAGE"),
]
ExporterOpt = Annotated[
    Optional[Exporter],
    typer.Option(
        "--exporter", help="The torch.onnx exporter. Default: torch's own default.", envvar="BISECTOR_EXPORTER"
    ),
]
InitOpt = Annotated[
    Optional[str], typer.Option("--init-kwargs", help="JSON object of constructor arguments, e.g. '{\"depth\": 4}'.")
]
DeviceOpt = Annotated[
    Optional[Device],
    typer.Option(
        "--device", help="Where the model runs. Default: auto (cuda when torch sees one).", envvar="BISECTOR_DEVICE"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")]
SeedOpt = Annotated[
    Optional[int],
    typer.Option("--seed", help="Seed of the shape schedule and the inputs. Default: 0.", envvar="BISECTOR_SEED"),
]
JobsOpt = Annotated[
    Optional[int],
    typer.Option("--jobs", "-j", help="Probes run at once. Default: number of cores.", envvar="BISECTOR_JOBS"),
]
FreshOpt = Annotated[
    bool,
    typer.Option(
        "--fresh",
        help="Start every probe in a new interpreter (~3 s each) instead of forking from the probe server.",
        envvar="BISECTOR_FRESH",
    ),
]
TimeoutOpt = Annotated[
    Optional[float],
    typer.Option(
        "--timeout", help="Seconds a probe may run before it is killed. Default: 300.", envvar="BISECTOR_TIMEOUT"
    ),
]
MemCapOpt = Annotated[
    Optional[str],
    typer.Option(
        "--mem-cap",
        help="RSS at which a probe is killed, e.g. 8GB. Default: half the RAM, at most 16 GB.",
        envvar="BISECTOR_MEM_CAP",
    ),
]
NoiseRssOpt = Annotated[
    Optional[str], typer.Option("--noise-rss", help="How far RSS may wander before growth counts. Default: 5MB.")
]
NoiseGpuOpt = Annotated[
    Optional[str],
    typer.Option("--noise-gpu", help="How far GPU memory may wander before growth counts. Default: 200MB."),
]
MetricOpt = Annotated[
    Optional[Metric],
    typer.Option(
        "--metric", help="Bytes metric judged: rss, or uss (private bytes). Default: rss.", envvar="BISECTOR_METRIC"
    ),
]
RetriesOpt = Annotated[
    Optional[int],
    typer.Option("--retries", help="Reruns with twice the iterations when a verdict is inconclusive. Default: 2."),
]
AutogradOpt = Annotated[
    bool, typer.Option("--keep-autograd", help="Run eager forwards with autograd on (default: torch.no_grad()).")
]
FloorOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--floor",
        help=(
            "Detection floor a clean verdict must reach, per call: SIZE for every stage or STAGE=SIZE "
            "(repeatable). More calls are run until it does. Defaults: eager and inference 2KB, export 16KB."
        ),
    ),
]
TraceOpt = Annotated[
    bool, typer.Option("--tracemalloc", help="Also trace Python allocations and report the lines whose memory grew.")
]
NoCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Measure everything again: reuse no cached control run and no result kept in the run directory.",
    ),
]
ConfigOpt = Annotated[
    Optional[str],
    typer.Option(
        "--config",
        help="pyproject.toml whose [tool.bisector] gives defaults. Default: the nearest one.",
        envvar="BISECTOR_CONFIG",
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks of bisector's own errors.")]
ReportOpt = Annotated[
    Optional[str],
    typer.Option("--report", help="Write an HTML report (self-contained, charts also as PNG) into this folder."),
]
BundleOpt = Annotated[
    Optional[str],
    typer.Option(
        "--bundle",
        help=(
            "Write a repro bundle per culprit (repro.py needing only torch/onnxruntime/psutil, inputs, "
            "model.onnx, env, ISSUE.md) into this folder."
        ),
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bisector {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Find and repair memory leaks where PyTorch meets ONNX."""


def _err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _out_console() -> Any:
    """Reports on stdout; in a pipe or a CI log, wide enough that tree lines are not cut."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


@dataclass
class _RunState:
    """What an interrupted command tells the user: where finished work is kept and what --apply
    had written. Mutable on purpose: the command body fills it in as it goes."""

    run_dir: str | None = None
    apply: bool = False
    written: list[str] = field(default_factory=list)
    backups: str | None = None


def _stopped() -> bool:
    from bisector.common import interrupts

    return interrupts.received() is not None


def _interrupted(state: _RunState | None) -> int:
    from bisector.common import interrupts

    code = interrupts.exit_code()
    err = _err_console()
    err.print(f"interrupted ({interrupts.signal_name(code - 128)}): running probes stopped", markup=False)
    if state is not None and state.run_dir:
        err.print(f"finished probes are kept in {state.run_dir}; run the same command again to resume", markup=False)
    if state is not None and state.written:
        err.print(f"--apply had written {', '.join(state.written)} (backups in {state.backups})", markup=False)
    elif state is not None and state.apply:
        err.print("--apply wrote nothing", markup=False)
    return code


def _guard(debug: bool, body: Callable[[], int], state: _RunState | None = None) -> int:
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
        err = _err_console()
        err.print(f"[bold red]error:[/] {_esc(str(exc))}")
        detail = getattr(exc, "detail", "")
        if detail:
            err.print(_esc(_indent(detail)), style="dim")
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the promise: no traceback without --debug
        if interrupts.received() is not None:
            return _interrupted(state)
        if debug:
            raise
        _err_console().print(
            f"[bold red]internal error:[/] {_esc(type(exc).__name__)}: {_esc(str(exc))} (rerun with --debug "
            "for the traceback)"
        )
        return EXIT_INTERNAL


def _prepared(spec: str, options: Any, output: Output) -> tuple[Any, Any]:
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
        _err_console().print(prepared.inferred.describe(), markup=False)
    problem = stages_problem(prepared.options.stages)
    if problem:
        raise UserError(problem)
    policy = output.fail_on or FailOn.parse(prepared.config.get("fail_on"))
    return prepared, policy.with_budget(output.budget if output.budget is not None else prepared.config.get("budget"))


def _check_outputs(options: Any, output: Output, keeps_run: bool) -> None:
    """The folders the command will write, refused now if it could not (issue 19): not after
    every probe has run. keeps_run: the command keeps its run in ./.bisector when no --run-dir."""
    from bisector.store.outputs import check_outputs

    run_dir = options.run_dir or (str(Path.cwd() / ".bisector") if keeps_run else None)
    check_outputs((run_dir, "--run-dir"), (output.report_dir, "--report"), (output.bundle_dir, "--bundle"))


def _with_inferred(data: dict[str, Any], prepared: Any) -> dict[str, Any]:
    """--json says when the inputs were inferred, and what they were."""
    if prepared.inferred is not None:
        data["inputs_inferred"] = prepared.inferred.to_json()
    return data


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _logging(verbose: int, quiet: bool) -> None:
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


class _Progress:
    """Progress on stderr. On a terminal: a bar of probes done out of those planned so far, with
    the stages running and the time elapsed. Elsewhere (pipes, CI logs): one line per finished stage."""

    def __init__(self, bar: bool, lines: bool = True) -> None:
        self.bar_enabled = bar
        self.lines = lines and not bar
        self.planned = 0
        self.done = 0
        self.active: list[str] = []
        self._lock = threading.Lock()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.bar_enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("probes"),
                TimeElapsedColumn(),
                console=_err_console(),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("starting", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def _update(self) -> None:
        if self._bar is not None:
            stages = sorted({label.split()[0] for label in self.active}) or ["…"]
            self._bar.update(
                self._task,
                description=", ".join(stages),
                completed=self.done,
                total=max(self.planned, self.done) or None,
            )

    def probe_queued(self, label: str) -> None:
        with self._lock:
            self.planned += 1
            self._update()

    def probe_dropped(self, label: str) -> None:
        with self._lock:
            self.planned -= 1
            self._update()

    def probe_started(self, label: str) -> None:
        with self._lock:
            self.active.append(label)
            self._update()

    def probe_finished(self, label: str, result: Any, cached: bool = False) -> None:
        with self._lock:
            if label in self.active:
                self.active.remove(label)
            self.done += 1
            self._update()

    def stage_done(self, stage: str, kind: str, summary: str) -> None:
        if kind == "failed":
            return  # the model could not run this stage: the error line after the report says so
        if self.lines:
            _err_console().print(f"{stage}: {summary}", markup=False, highlight=False)
        elif self._bar is not None:
            self._bar.console.print(f"{stage}: {summary}", markup=False, highlight=False)


EXIT_BY_STATUS = {
    "clean": EXIT_CLEAN,
    "fixed": EXIT_CLEAN,
    "unfixed": EXIT_FOUND,
    "unproven": EXIT_UNPROVEN,
    "error": EXIT_USER,
}

# -- the options every probing command shares ----------------------------------------------------
# Declared once; `@probing` adds them to a command's signature and hands the command one parsed
# Options (what to measure) and one Output (how to show it), so commands declare only their extras.
RunDirOpt = Annotated[
    Optional[str],
    typer.Option(
        "--run-dir",
        help=(
            "Where measurements, recorded inputs and failed probes' folders are kept, so a re-run resumes. "
            "Default: ./.bisector"
        ),
        envvar="BISECTOR_RUN_DIR",
    ),
]
ExportScriptOpt = Annotated[
    Optional[str],
    typer.Option(
        "--export-script",
        help=(
            "Your export script: measured with the export settings it uses for this model; fix patches its "
            "torch.onnx.export call with the kept settings."
        ),
    ),
]
InferScriptOpt = Annotated[
    Optional[str],
    typer.Option(
        "--infer-script",
        help=(
            "Your inference script: measured with the ONNX Runtime settings it applies to this model's "
            "session; fix patches its InferenceSession with the kept settings."
        ),
    ),
]

FailOnOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--fail-on",
        envvar="BISECTOR_FAIL_ON",
        help=(
            "Findings that fail the run (exit 1), comma-separated: leak, shape-growth, shape-growth:bounded, "
            "shape-growth:unbounded, toolchain-leak, inconclusive. Default: leak,shape-growth:unbounded "
            "(bounded growth is reported with its ceiling)."
        ),
    ),
]
BudgetOpt = Annotated[
    Optional[str],
    typer.Option(
        "--budget",
        envvar="BISECTOR_BUDGET",
        help=(
            "Memory budget, e.g. 2GB: shape-growth whose projected peak (RSS at the largest declared input) is "
            "over it fails the run, and its fixes are judged by how far under it they bring the peak."
        ),
    ),
]

VerboseOpt = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        help=(
            "More on stderr: -v each stage's reasons and each probe's outcome (a crashed probe's stderr in full), "
            "-vv debug."
        ),
    ),
]
QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="The verdict line and errors only (no progress, no stage lines, no report)."),
]

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

    def progress(self) -> _Progress:
        return _Progress(bar=sys.stderr.isatty() and not self.debug and not self.quiet, lines=not self.quiet)


def _options(v: dict[str, Any]) -> Any:
    from bisector.pipeline.prepare import Options

    return Options(
        inputs=tuple(v["input"] or ()),
        dims=tuple(v["dim"] or ()),
        stages=tuple(_value(s) for s in v["stage"]) if v["stage"] else None,
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


def _value(choice: Any) -> Any:
    return choice.value if isinstance(choice, Enum) else choice


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
        from bisector.common.errors import UserError
        from bisector.judge.fail_on import FailOn, parse_budget
        from bisector.options.environment import check_environment

        given = {n: kwargs.pop(n) for n in SHARED}
        try:
            check_environment()  # a bad BISECTOR_* is an error even where a flag overrides it
            fail_on = FailOn.parse(given["fail_on"]) if given["fail_on"] else None  # None: the config's
            budget = parse_budget(given["budget"])  # None: the config's
        except UserError as exc:
            _err_console().print(f"[bold red]error:[/] {_esc(str(exc))}")
            return EXIT_USER
        output = Output(
            json=given["json_out"],
            report_dir=given["report_dir"],
            bundle_dir=given["bundle_dir"],
            debug=given["debug"],
            fail_on=fail_on,
            budget=budget,
            verbose=given["verbose"],
            quiet=given["quiet"],
        )
        _logging(output.verbose, output.quiet)
        return fn(options=_options(given), output=output, **kwargs)

    params = own + shared
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    del command.__wrapped__  # typer must read the signature above, not fn's
    return command


def _emit(data: dict[str, Any], kind: str) -> None:
    """A report on stdout as JSON, stamped with the schema version and the versions it ran with."""
    sys.stdout.write(json.dumps(stamp(data, kind), indent=2) + "\n")


@app.command()
@probing
def measure(spec: Spec, options: Any = None, output: Any = None) -> int:
    """Measure memory per stage (eager, export, inference) in isolated probes and give a verdict:
    clean, leak (grows every call), shape-growth (grows per new input shape) or inconclusive."""

    def body() -> int:
        from bisector.lab.measure import measure as run_measure
        from bisector.pipeline.failures import failure_error
        from bisector.pipeline.run import measured_status
        from bisector.reports.terminal import measure_verdict_line, render_measure

        _check_outputs(options, output, keeps_run=False)
        prepared, fail_on = _prepared(spec, options, output)
        with output.progress() as progress:
            report = run_measure(
                prepared.model, prepared.plan, prepared.options, events=progress, run_dir=options.run_dir
            )
        extra, said = _publish(report, output.report_dir, output.bundle_dir)
        if output.json:
            _emit(_with_inferred({**report.to_json(), **extra}, prepared), "measure")
        elif output.quiet:
            _out_console().print(measure_verdict_line(report))
        else:
            render_measure(report, _out_console())
        _said(said, output)
        error = failure_error(report)
        if error is not None:
            raise error
        return EXIT_BY_STATUS[measured_status(report, fail_on).value]

    return _guard(output.debug, body)


def _is(exc: BaseException, name: str) -> bool:
    # typer vendors its own click, whose exception classes are private; match them by name.
    return any(c.__name__ == name for c in type(exc).__mro__)


@app.command()
@probing
def find(spec: Spec, options: Any = None, output: Any = None) -> int:
    """Measure each stage, then bisect the module tree down to the smallest regions that leak
    (or grow per new input shape), with figures and what to try next for each."""
    state = _RunState()

    def body() -> int:
        from bisector.find.localise import find as run_find
        from bisector.pipeline.failures import failure_error
        from bisector.pipeline.run import find_status
        from bisector.reports.terminal import find_verdict_line, render_find

        _check_outputs(options, output, keeps_run=True)
        prepared, fail_on = _prepared(spec, options, output)
        state.run_dir = str(Path(options.run_dir) if options.run_dir else Path.cwd() / ".bisector")
        with output.progress() as progress:
            report = run_find(prepared.model, prepared.plan, prepared.options, events=progress, run_dir=options.run_dir)
        extra, said = _publish(report, output.report_dir, output.bundle_dir)
        if output.json:
            _emit(_with_inferred({**report.to_json(), **extra}, prepared), "find")
        elif output.quiet:
            _out_console().print(find_verdict_line(report))
        else:
            render_find(report, _out_console())
        _said(said, output)
        _disk_note(state.run_dir, output)
        error = failure_error(report.measure)
        if error is not None:
            raise error
        return EXIT_BY_STATUS[find_status(report, fail_on).value]

    return _guard(output.debug, body, state)


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
AllowChangesOpt = Annotated[
    bool,
    typer.Option(
        "--allow-output-changes", help="Keep fixes that change outputs by design (padding to multiples of 16)."
    ),
]
PickOpt = Annotated[
    Optional[int],
    typer.Option(
        "--pick",
        help="Patch with the N-th kept fix of each culprit (1 = the best ranked) instead of the default choice.",
    ),
]


@app.command()
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
    state = _RunState(apply=apply)

    def body() -> int:
        from bisector.patching.diff import combined_diff_bytes
        from bisector.pipeline import run as pipeline
        from bisector.reports.terminal import fix_verdict_line, render_find, render_fix

        request = pipeline.FixRequest(
            fixers=tuple(fixer or ()),
            allow_output_changes=allow_output_changes,
            pick=pick,
            apply=apply,
            force=force,
        )
        # Refused now, not after minutes of probing.
        root = pipeline.check_request(spec, options, request, _fixer_names())
        _check_outputs(options, output, keeps_run=False)  # the run directory: check_request's
        prepared, fail_on = _prepared(spec, options, output)
        request = replace(request, fail_on=fail_on)

        def show_found(found: Any) -> None:
            if not output.json and not output.quiet:
                # The find report is ready long before the fixes are measured: show it now.
                render_find(found, _out_console())
                sys.stdout.flush()

        def on_run_dir(path: str) -> None:
            state.run_dir = path
            state.backups = str(root / ".bisector" / "backups")

        with output.progress() as progress:
            hooks = pipeline.FixCallbacks(
                events=progress, on_run_dir=on_run_dir, on_found=show_found, written=state.written
            )
            outcome = pipeline.fix(prepared, request, hooks, root=root, stopped=_stopped)
        data = outcome.to_json()
        extra, said = _publish(outcome.report, output.report_dir, output.bundle_dir, data["patches"])
        data.update(extra)
        if output.json:
            _emit(_with_inferred(data, prepared), "fix")
        elif output.quiet and not diff:
            _out_console().print(fix_verdict_line(outcome.report))
        else:
            _render_fix(outcome, diff, apply, combined_diff_bytes, render_fix)
        _said(said, output)
        _disk_note(state.run_dir, output)
        return EXIT_BY_STATUS[outcome.status.value]

    return _guard(output.debug, body, state)


def _render_fix(
    outcome: Any, diff: bool, apply: bool, combined_diff: Callable[..., bytes], render_fix: Callable[..., None]
) -> None:
    console = _out_console()
    render_fix(outcome.report, console, show_find=False)
    for note in outcome.notes:
        console.print(f"note: {note}", style="yellow", markup=False)
    for stage, why in outcome.stage_errors.items():
        console.print(
            f"{stage} could not run ({why}); the other stages were found and fixed", style="red", markup=False
        )
    patches = outcome.patches
    if diff:
        data = combined_diff(patches)
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


def _publish(
    report: Any, report_dir: str | None, bundle_dir: str | None, patches: Any = ()
) -> tuple[dict[str, Any], list[str]]:
    """HTML report and repro bundles when asked; find/fix keep the report document in their run
    directory either way (for `bisector report`). Returns what --json gains, and the lines saying
    where it wrote (printed by _said after the report, where a person looks last)."""
    from bisector.reports.publish import publish

    said: list[str] = []
    return publish(report, report_dir, bundle_dir, patches, say=said.append), said


DISK_NOTE_BYTES = 100 * 1000**2  # a run directory past this is worth a line at the end


def _disk_note(run_root: str | None, output: Output) -> None:
    """One stderr line at the end when the run directory holds more than 100 MB: what it holds and
    how to free it (issue 25: a user found 2.6 GB only by running `bisector clean`)."""
    if run_root is None or output.quiet or output.json:
        return
    from bisector.common.units import format_bytes
    from bisector.store.clean import entries

    held = sum(e.size for e in entries(Path(run_root), None))
    if held > DISK_NOTE_BYTES:
        _err_console().print(
            f"disk: {run_root} holds {format_bytes(held)} (`bisector clean` lists it, `--remove` frees it)",
            markup=False,
            highlight=False,
        )


def _said(lines: list[str], output: Output | None = None) -> None:
    if output is not None and output.quiet:
        return  # -q: the verdict line and errors only
    err = _err_console()
    for line in lines:
        err.print(line, markup=False, highlight=False)


@app.command("report")
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
            _err_console().print(f"report: {page}", markup=False, highlight=False)
        return EXIT_CLEAN

    return _guard(debug, body)


@app.command()
def repair(
    config: ConfigOpt = None,
    manifest: Annotated[
        Optional[str],
        typer.Option(
            "--manifest",
            help=(
                'A TOML ([[models]] tables) or JSON ({"models": [...]}) list of models, instead of '
                "pyproject's [[tool.bisector.models]]."
            ),
        ),
    ] = None,
    out: Annotated[
        str, typer.Option("--out", help="Where patches, per-model results and the summary go.")
    ] = ".bisector/repair",
    jobs: JobsOpt = None,
    models_at_once: Annotated[
        int, typer.Option("--models-at-once", help="Models repaired side by side (they share --jobs probes).")
    ] = 2,
    allow_output_changes: AllowChangesOpt = False,
    fresh: FreshOpt = False,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="local (threads on this machine) or ray (one Ray task per model; pip install 'bisector[ray]').",
        ),
    ] = "local",
    address: Annotated[
        Optional[str],
        typer.Option(
            "--address",
            help=(
                "With --executor ray: the cluster to join (ray://HOST:10001, HOST:6379 or auto). Default: a "
                "Ray started on this machine."
            ),
        ),
    ] = None,
    shard: Annotated[
        Optional[str],
        typer.Option(
            "--shard",
            help=(
                "I/N: repair only this share of the models (a stable split by name), for CI matrices; join the "
                "outputs with `bisector merge`."
            ),
        ),
    ] = None,
    json_out: JsonOpt = False,
    report_dir: Annotated[
        Optional[str],
        typer.Option(
            "--report", help="Write an HTML report per model and an index.html over all models into this folder."
        ),
    ] = None,
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

    def body() -> int:
        from bisector import api
        from bisector.options.environment import check_environment

        check_environment()
        _logging(verbose, quiet)
        err = _err_console()

        def progress(result: Any, state: Any) -> None:
            if not json_out and not quiet:
                err.print(
                    f"{result.status:<8} {result.spec}  ({result.wall_s:.0f} s)  "
                    f"[{state.done}/{state.total} done, {state.running} running, {state.queued} queued]",
                    markup=False,
                )

        summary = api.repair(
            config=config,
            manifest=manifest,
            out=out,
            jobs=jobs,
            models_at_once=models_at_once,
            allow_output_changes=allow_output_changes,
            fresh=fresh,
            progress=progress,
            report_dir=report_dir,
            executor=executor,
            address=address,
            shard=shard,
            fail_on=fail_on,
            budget=budget,
        )
        _print_summary(summary, json_out)
        if report_dir:
            err.print(f"report: {Path(report_dir) / 'index.html'}", markup=False, highlight=False)
        bundles = Path(summary.out) / "bundles"
        if bundles.is_dir():
            err.print(f"bundles: {bundles}", markup=False, highlight=False)
        return summary.exit_code

    return _guard(debug, body)


def _print_summary(summary: Any, json_out: bool) -> None:
    if json_out:
        sys.stdout.write(json.dumps(stamp(summary.to_json(), "repair"), indent=2) + "\n")
        return
    sys.stdout.write(summary.markdown())
    counts = ", ".join(f"{n} {k}" for k, n in summary.counts.items())
    resumed = sum(1 for r in summary.results if r.resumed)
    sys.stdout.write(
        f"\n{len(summary.results)} models: {counts}"
        + (f" ({resumed} resumed)" if resumed else "")
        + f"; summary in {summary.out}/summary.md\n"
    )


@app.command()
def merge(
    outs: Annotated[
        list[str], typer.Argument(help="The --out folders of `bisector repair --shard I/N` runs.", show_default=False)
    ],
    config: ConfigOpt = None,
    manifest: Annotated[
        Optional[str],
        typer.Option(
            "--manifest", help="The manifest the shards ran from, when not pyproject's [[tool.bisector.models]]."
        ),
    ] = None,
    out: Annotated[
        str, typer.Option("--out", help="Where the merged patches, per-model results and summary go.")
    ] = ".bisector/repair",
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

    return _guard(debug, body)


def _fixer_names() -> list[str]:
    from bisector.pipeline.run import known_fixers

    return known_fixers()


@app.command("fixers")
def list_fixers(json_out: JsonOpt = False) -> int:
    """List the fixers: what each changes, and the stages and verdicts it addresses; a plugin
    that fails to load as broken, with its error."""
    from bisector.fixers import family_of, load

    registry = load()
    rows = [
        {
            "name": f.name,
            "description": f.description,
            "stages": list(f.stages),
            "kinds": list(f.kinds),
            "family": family_of(f) or None,
            "status": "ok",
            "error": None,
        }
        for f in registry.fixers
    ]
    rows += [
        {
            "name": b.name,
            "description": b.value,
            "stages": [],
            "kinds": [],
            "family": None,
            "status": "broken",
            "error": b.error,
        }
        for b in registry.broken
    ]
    if json_out:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return EXIT_CLEAN
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        if r["status"] == "broken":
            sys.stdout.write(f"{r['name']:<{width}}  broken: {r['error']}\n")
            continue
        sys.stdout.write(
            f"{r['name']:<{width}}  {'/'.join(r['stages']):<16} {'/'.join(r['kinds']):<18} {r['description']}\n"
        )
    families: dict[str, list[str]] = {}
    for r in rows:
        if r["family"]:
            families.setdefault(r["family"], []).append(r["name"])
    for family, members in families.items():
        sys.stdout.write(f"{family:<{width}}  selects {', '.join(members)}\n")
    return EXIT_CLEAN


@app.command("schema")
def schema_command() -> int:
    """Print the JSON Schema every --json report and stored report follows (schema_version in
    each report says which)."""
    from bisector.common.contract import schema_text

    sys.stdout.write(schema_text())
    return EXIT_CLEAN


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


@app.command("clean")
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
        from bisector.common.units import format_bytes, parse_size
        from bisector.lab.stage import RUN_DIR
        from bisector.store.caches import default_cache_dir
        from bisector.store.clean import FOREIGN, clean

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
            for o in outcomes:
                e, mark = o.entry, "not bisector's" if o.entry.kind == FOREIGN else "kept"
                if o.selected:
                    mark = "removed" if o.removed else f"kept: {o.error}" if o.error else "to go"
                age = f"{e.age_days(now):7.1f} d"
                sys.stdout.write(f"{e.kind:<13} {format_bytes(e.size):>9} {age}  {mark:<8} {e.path}\n")
            foreign = sum(1 for o in outcomes if o.entry.kind == FOREIGN)
            if foreign:
                sys.stdout.write(
                    f"{foreign} not bisector's: bisector cannot prove it wrote them, so they are never removed\n"
                )
            freed = sum(o.entry.size for o in outcomes if (o.removed if remove else o.selected))
            total = sum(o.entry.size for o in outcomes)
            verb = "removed" if remove else "would remove"
            hint = " (rerun with --remove)" if freed and not remove else ""
            sys.stdout.write(f"{len(outcomes)} entries, {format_bytes(total)}; {verb} {format_bytes(freed)}{hint}\n")
        # What could not be removed is listed with why (a permission, a file in use): the user's to
        # look at, not a failure of bisector.
        return EXIT_USER if any(o.error for o in outcomes) else EXIT_CLEAN

    return _guard(debug, body)


def _check_runtime(argv: list[str]) -> None:
    """One line before a probing command when ONNX Runtime is missing (exit 2 if a stage needs it)
    or installed twice over (a warning): the probes would otherwise fail with a long traceback."""
    from bisector.options.runtime_check import check_command_line

    problem = check_command_line(argv)
    if problem is None:
        return
    line, fatal = problem
    sys.stderr.write(f"{'error' if fatal else 'warning'}: {line}\n")
    if fatal:
        sys.exit(EXIT_USER)


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
    _check_runtime(sys.argv[1:] if argv is None else argv)
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
