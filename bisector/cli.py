"""The command line: parses options, calls the library, renders. Nothing else lives here.

Exit codes: 0 clean (or a toolchain-leak: growth torch or ONNX Runtime own, reported apart) ·
1 leak or shape-growth found · 2 user error · 3 internal error ·
4 not proven either way (inconclusive after retries, or a probe crashed or timed out).
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from bisector import __version__
from bisector.contract import stamp

EXIT_CLEAN, EXIT_FOUND, EXIT_USER, EXIT_INTERNAL, EXIT_UNPROVEN = 0, 1, 2, 3, 4

app = typer.Typer(
    name="bisector",
    help="Find and repair memory leaks where PyTorch meets ONNX: eager forward, torch.onnx.export, ONNX Runtime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# -- options shared by the commands that measure ------------------------------------------------
Spec = Annotated[str, typer.Argument(help="The model: path/to/model.py:Name (an nn.Module class, a factory, or an instance).", show_default=False)]
InputOpt = Annotated[Optional[list[str]], typer.Option("--input", "-i", help="A forward argument, in order: NAME=D1,D2,...[:DTYPE[:LOW:HIGH]], dims are integers or symbols (x=B,3,H,W; ids=B,T:int64:0:1000).")]
DimOpt = Annotated[Optional[list[str]], typer.Option("--dim", "-d", help="Range of a symbol: SYM=MIN:MAX (or SYM=N). Defaults: B 1:16, others 5:100.")]
StageOpt = Annotated[Optional[list[str]], typer.Option("--stage", "-s", help="eager, export or inference (repeatable). Default: all three.")]
ExporterOpt = Annotated[Optional[str], typer.Option("--exporter", help="dynamo or torchscript. Default: torch's own default.")]
InitOpt = Annotated[Optional[str], typer.Option("--init-kwargs", help="JSON object of constructor arguments, e.g. '{\"depth\": 4}'.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda. Default: auto (cuda when torch sees one).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Seed of the shape schedule and the inputs. Default: 0.")]
JobsOpt = Annotated[Optional[int], typer.Option("--jobs", "-j", help="Probes run at once. Default: number of cores.")]
FreshOpt = Annotated[bool, typer.Option("--fresh", help="Start every probe in a new interpreter (~3 s each) instead of forking from the probe server.")]
TimeoutOpt = Annotated[Optional[float], typer.Option("--timeout", help="Seconds a probe may run before it is killed. Default: 300.")]
MemCapOpt = Annotated[Optional[str], typer.Option("--mem-cap", help="RSS at which a probe is killed, e.g. 8GB. Default: half the RAM, at most 16 GB.")]
NoiseRssOpt = Annotated[Optional[str], typer.Option("--noise-rss", help="How far RSS may wander before growth counts. Default: 5MB.")]
NoiseGpuOpt = Annotated[Optional[str], typer.Option("--noise-gpu", help="How far GPU memory may wander before growth counts. Default: 200MB.")]
MetricOpt = Annotated[Optional[str], typer.Option("--metric", help="Bytes metric judged: rss or uss (private bytes). Default: rss.")]
RetriesOpt = Annotated[Optional[int], typer.Option("--retries", help="Reruns with twice the iterations when a verdict is inconclusive. Default: 2.")]
AutogradOpt = Annotated[bool, typer.Option("--keep-autograd", help="Run eager forwards with autograd on (default: torch.no_grad()).")]
FloorOpt = Annotated[Optional[list[str]], typer.Option("--floor", help="Detection floor a clean verdict must reach, per call: SIZE for every stage or STAGE=SIZE (repeatable). More calls are run until it does. Defaults: eager and inference 4KB, export 16KB.")]
TraceOpt = Annotated[bool, typer.Option("--tracemalloc", help="Also trace Python allocations and report the lines whose memory grew.")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Measure everything again: reuse no cached control run and no result kept in the run directory.")]
ConfigOpt = Annotated[Optional[str], typer.Option("--config", help="pyproject.toml whose [tool.bisector] gives defaults. Default: the nearest one.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks of bisector's own errors.")]
ReportOpt = Annotated[Optional[str], typer.Option("--report", help="Write an HTML report (self-contained, charts also as PNG) into this folder.")]
BundleOpt = Annotated[Optional[str], typer.Option("--bundle", help="Write a repro bundle per culprit (repro.py needing only torch/onnxruntime/psutil, inputs, model.onnx, env, ISSUE.md) into this folder.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bisector {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """Find and repair memory leaks where PyTorch meets ONNX."""


def _err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _out_console() -> Any:
    """Reports on stdout; in a pipe or a CI log, wide enough that tree lines are not cut."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


# Signals received (SIGINT, SIGTERM, SIGHUP): the exit code is 128 + the first.
_SIGNALS: list[int] = []


def _on_signal(signum: int, frame: Any) -> None:
    """Stop at once: kill every probe (whole process trees) and probe server, remove the
    temporary folders, then unwind as Ctrl-C does, so what finished is kept and reported.
    Without this, SIGTERM left --fresh children running with no timeout or cap, and Ctrl-C
    waited for the running probe's timeout."""
    from bisector import interrupts

    _SIGNALS.append(signum)
    pool = sys.modules.get("bisector.probe.pool")
    if pool is not None:  # not imported: no probe was ever started
        pool.terminate_all()
    if interrupts.deferring():  # a file being put in place: raise once it is done and noted
        interrupts.defer(signum)
        return
    raise KeyboardInterrupt


def _install_signal_handlers() -> None:
    import signal

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            # An ignored signal stays ignored (`nohup bisector ...`, a background job's SIGINT).
            if signal.getsignal(sig) != signal.SIG_IGN:
                signal.signal(sig, _on_signal)
        except (ValueError, OSError):  # not the main thread (bisector called as a library)
            pass


@dataclass
class _RunState:
    """What an interrupted command tells the user: where finished work is kept and what --apply
    had written. Mutable on purpose: the command body fills it in as it goes."""

    run_dir: str | None = None
    apply: bool = False
    written: list[str] = field(default_factory=list)
    backups: str | None = None


def _interrupted(state: _RunState | None) -> int:
    import signal

    sig = _SIGNALS[0] if _SIGNALS else signal.SIGINT
    err = _err_console()
    err.print(f"interrupted ({signal.Signals(sig).name}): running probes stopped", markup=False)
    if state is not None and state.run_dir:
        err.print(f"finished probes are kept in {state.run_dir}; run the same command again to resume", markup=False)
    if state is not None and state.written:
        err.print(f"--apply had written {', '.join(state.written)} (backups in {state.backups})", markup=False)
    elif state is not None and state.apply:
        err.print("--apply wrote nothing", markup=False)
    return 128 + int(sig)


def _guard(debug: bool, body: Callable[[], int], state: _RunState | None = None) -> int:
    """Run a command body: our errors become one line and an exit code, never a traceback."""
    from bisector.errors import BisectorError

    try:
        code = body()
        # find keeps what finished when stopped and prints it; the exit code still says so.
        return _interrupted(state) if _SIGNALS else code
    except KeyboardInterrupt:
        return _interrupted(state)
    except BisectorError as exc:
        if _SIGNALS:  # an error the stop itself caused (a killed probe server): report the stop
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
        if _SIGNALS:
            return _interrupted(state)
        if debug:
            raise
        _err_console().print(f"[bold red]internal error:[/] {_esc(type(exc).__name__)}: {_esc(str(exc))} (rerun with --debug for the traceback)")
        return EXIT_INTERNAL


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


class _Progress:
    """Live status of running probes on stderr (only on a terminal; silent in pipes and CI)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.active: list[str] = []
        self.done = 0
        self._lock = threading.Lock()
        self._status: Any = None

    def __enter__(self) -> "_Progress":
        if self.enabled:
            self._status = _err_console().status("starting probes…")
            self._status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)

    def _update(self) -> None:
        if self._status is not None:
            running = ", ".join(self.active[:4]) or "…"
            self._status.update(f"probing: {running}   ({self.done} done)")

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


def _measure_exit(report: Any) -> int:
    from bisector.measure import CRASHED, FAILED
    from bisector.verdict import CLEAN, INCONCLUSIVE, LEAK, SHAPE_GROWTH, TOOLCHAIN_LEAK

    # Exit codes speak of the user's model: what the toolchain keeps is reported, not counted.
    kinds = {CLEAN if r.kind == TOOLCHAIN_LEAK else r.kind for r in report.stages.values()}
    if kinds & {LEAK, SHAPE_GROWTH}:
        return EXIT_FOUND
    if FAILED in kinds:
        return EXIT_USER
    if kinds & {INCONCLUSIVE, CRASHED}:
        return EXIT_UNPROVEN
    return EXIT_CLEAN if kinds <= {CLEAN} else EXIT_UNPROVEN


def _failure_error(report: Any, skip: Any = ()) -> Any:
    """The first stage whose model could not run or export, as a user error (exit 2)."""
    from bisector.errors import InternalError, UserError
    from bisector.measure import FAILED

    for r in report.stages.values():
        if r.kind == FAILED and r.stage not in skip:
            f = r.failure
            if f.where == "internal":
                return InternalError(f.message)
            hint = {
                "export": f"; try --exporter {'dynamo' if 'torchscript exporter' in f.message else 'torchscript'}, or --stage eager to measure the forward only",
                "session": "; the exported graph does not load in ONNX Runtime (try another --exporter)",
                "inputs": "; check --input, or the model file's bisector_inputs()",
                "forward": "; check that --input matches the forward's arguments",
            }.get(f.where, "")
            if f.where in ("export", "session"):
                from fixers.onnx_symbolics import failing_operators

                ops = failing_operators(f.message)
                if ops:
                    hint = f"; `bisector fix` tries a symbolic for {', '.join(ops)} or another exporter" + hint
            if getattr(f, "probe_dir", ""):
                hint += f" (probe folder kept: {f.probe_dir})"
            return UserError(f"{r.stage} stage: {f.message}{hint}", detail=f.traceback)
    return None


@app.command()
def measure(
    spec: Spec,
    input: InputOpt = None,
    dim: DimOpt = None,
    stage: StageOpt = None,
    exporter: ExporterOpt = None,
    init_kwargs: InitOpt = None,
    device: DeviceOpt = None,
    json_out: JsonOpt = False,
    seed: SeedOpt = None,
    jobs: JobsOpt = None,
    fresh: FreshOpt = False,
    timeout: TimeoutOpt = None,
    mem_cap: MemCapOpt = None,
    noise_rss: NoiseRssOpt = None,
    noise_gpu: NoiseGpuOpt = None,
    metric: MetricOpt = None,
    retries: RetriesOpt = None,
    keep_autograd: AutogradOpt = False,
    tracemalloc: TraceOpt = False,
    floor: FloorOpt = None,
    no_cache: NoCacheOpt = False,
    config: ConfigOpt = None,
    report_dir: ReportOpt = None,
    bundle_dir: BundleOpt = None,
    debug: DebugOpt = False,
    export_script: Annotated[Optional[str], typer.Option("--export-script", help="Measure with the export settings your export script uses for this model.")] = None,
    infer_script: Annotated[Optional[str], typer.Option("--infer-script", help="Measure with the ONNX Runtime settings your serving script applies to this model's session.")] = None,
) -> int:
    """Measure memory per stage (eager, export, inference) in isolated probes and give a verdict:
    clean, leak (grows every call), shape-growth (grows per new input shape) or inconclusive."""

    def body() -> int:
        from bisector import api
        from bisector.measure import measure as run_measure
        from bisector.report import render_measure

        prepared = api.prepare(
            spec, input or (), dim or (), stages=stage, exporter=exporter, device=device, init_kwargs=init_kwargs,
            seed=seed, noise_rss=noise_rss, noise_gpu=noise_gpu, metric=metric, retries=retries, jobs=jobs,
            fresh=fresh, timeout_s=timeout, mem_cap=mem_cap, keep_autograd=keep_autograd, tracemalloc=tracemalloc, floor=floor,
            cache=not no_cache, config=config,
        )
        prepared = _with_scripts(prepared, export_script, infer_script, exporter)
        with _Progress(sys.stderr.isatty() and not debug) as progress:
            report = run_measure(prepared.model, prepared.plan, prepared.options, events=progress)
        extra, said = _publish(report, report_dir, bundle_dir)
        if json_out:
            sys.stdout.write(json.dumps(stamp({**report.to_json(), **extra}, "measure"), indent=2) + "\n")
        else:
            render_measure(report, _out_console())
        _said(said)
        error = _failure_error(report)
        if error is not None:
            raise error
        return _measure_exit(report)

    return _guard(debug, body)


def _is(exc: BaseException, name: str) -> bool:
    # typer vendors its own click, whose exception classes are private; match them by name.
    return any(c.__name__ == name for c in type(exc).__mro__)


RunDirOpt = Annotated[Optional[str], typer.Option("--run-dir", help="Where measurements and recorded inputs are kept, so a re-run resumes. Default: ./.bisector")]


@app.command()
def find(
    spec: Spec,
    input: InputOpt = None,
    dim: DimOpt = None,
    stage: StageOpt = None,
    exporter: ExporterOpt = None,
    jobs: JobsOpt = None,
    json_out: JsonOpt = False,
    init_kwargs: InitOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    fresh: FreshOpt = False,
    timeout: TimeoutOpt = None,
    mem_cap: MemCapOpt = None,
    noise_rss: NoiseRssOpt = None,
    noise_gpu: NoiseGpuOpt = None,
    metric: MetricOpt = None,
    retries: RetriesOpt = None,
    keep_autograd: AutogradOpt = False,
    tracemalloc: TraceOpt = False,
    floor: FloorOpt = None,
    no_cache: NoCacheOpt = False,
    run_dir: RunDirOpt = None,
    config: ConfigOpt = None,
    report_dir: ReportOpt = None,
    bundle_dir: BundleOpt = None,
    debug: DebugOpt = False,
    export_script: Annotated[Optional[str], typer.Option("--export-script", help="Measure with the export settings your export script uses for this model.")] = None,
    infer_script: Annotated[Optional[str], typer.Option("--infer-script", help="Measure with the ONNX Runtime settings your serving script applies to this model's session.")] = None,
) -> int:
    """Measure each stage, then bisect the module tree down to the smallest regions that leak
    (or grow per new input shape), with figures and what to try next for each."""
    state = _RunState()

    def body() -> int:
        from bisector import api
        from bisector.find import find as run_find
        from bisector.report import render_find

        prepared = api.prepare(
            spec, input or (), dim or (), stages=stage, exporter=exporter, device=device, init_kwargs=init_kwargs,
            seed=seed, noise_rss=noise_rss, noise_gpu=noise_gpu, metric=metric, retries=retries, jobs=jobs,
            fresh=fresh, timeout_s=timeout, mem_cap=mem_cap, keep_autograd=keep_autograd, tracemalloc=tracemalloc, floor=floor,
            cache=not no_cache, config=config,
        )
        prepared = _with_scripts(prepared, export_script, infer_script, exporter)
        state.run_dir = str(Path(run_dir) if run_dir else Path.cwd() / ".bisector")
        with _Progress(sys.stderr.isatty() and not debug) as progress:
            report = run_find(prepared.model, prepared.plan, prepared.options, events=progress, run_dir=run_dir)
        extra, said = _publish(report, report_dir, bundle_dir)
        if json_out:
            sys.stdout.write(json.dumps(stamp({**report.to_json(), **extra}, "find"), indent=2) + "\n")
        else:
            render_find(report, _out_console())
        _said(said)
        error = _failure_error(report.measure)
        if error is not None:
            raise error
        if report.culprits:
            return EXIT_FOUND
        code = _measure_exit(report.measure)
        return EXIT_UNPROVEN if code == EXIT_CLEAN and not report.complete else code

    return _guard(debug, body, state)


FixerOpt = Annotated[Optional[list[str]], typer.Option("--fixer", help="Only this fixer (repeatable); see `bisector fixers`.")]
DiffOpt = Annotated[bool, typer.Option("--diff", help="Print the kept fixes as a unified diff (patch -p1 / git apply from the project root).")]
ApplyOpt = Annotated[bool, typer.Option("--apply", help="Write the diff to the files (atomically, with backups, only files unchanged since analysis and inside the project), then re-measure.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="With --apply: also replace files that are read-only.")]
ExportScriptOpt = Annotated[Optional[str], typer.Option("--export-script", help="Your export script: its torch.onnx.export call gets the kept export settings.")]
InferScriptOpt = Annotated[Optional[str], typer.Option("--infer-script", help="Your inference script: its InferenceSession gets the kept runtime settings.")]
AllowChangesOpt = Annotated[bool, typer.Option("--allow-output-changes", help="Keep fixes that change outputs by design (padding to multiples of 16).")]


@app.command()
def fix(
    spec: Spec,
    input: InputOpt = None,
    dim: DimOpt = None,
    stage: StageOpt = None,
    exporter: ExporterOpt = None,
    fixer: FixerOpt = None,
    allow_output_changes: AllowChangesOpt = False,
    diff: DiffOpt = False,
    apply: ApplyOpt = False,
    force: ForceOpt = False,
    export_script: ExportScriptOpt = None,
    infer_script: InferScriptOpt = None,
    jobs: JobsOpt = None,
    json_out: JsonOpt = False,
    init_kwargs: InitOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    fresh: FreshOpt = False,
    timeout: TimeoutOpt = None,
    mem_cap: MemCapOpt = None,
    noise_rss: NoiseRssOpt = None,
    noise_gpu: NoiseGpuOpt = None,
    metric: MetricOpt = None,
    retries: RetriesOpt = None,
    keep_autograd: AutogradOpt = False,
    no_cache: NoCacheOpt = False,
    run_dir: RunDirOpt = None,
    config: ConfigOpt = None,
    report_dir: ReportOpt = None,
    bundle_dir: BundleOpt = None,
    debug: DebugOpt = False,
    pick: Annotated[Optional[int], typer.Option("--pick", help="Patch with the N-th kept fix of each culprit (1 = the best ranked) instead of the default choice.")] = None,
) -> int:
    """Find the culprits, try every fixer that applies to each, re-measure, and report the fixes
    that make the curve flat and keep outputs equivalent, with before/after figures."""
    state = _RunState(apply=apply)

    def body() -> int:
        from bisector import api
        from bisector.find import Finder
        from bisector.patch import apply as apply_patches
        from bisector.patch import check_writable, combined_diff, patches_for, project_root
        from bisector.repair import Repairer, failure_culprits, holds
        from bisector.report import render_fix

        for script, flag in ((export_script, "--export-script"), (infer_script, "--infer-script")):
            if script and not Path(script).is_file():
                from bisector.errors import UserError

                raise UserError(f"{flag} {script} does not exist")
        # The project is decided from the model path as given, before any symlink is followed:
        # a link inside the project to a file outside it must not carry the writes outside.
        root = project_root(_given_path(spec))
        if apply:
            # Refused now, not after minutes of probing: files --apply would have to write
            # outside the project, or read-only ones without --force.
            for path, what in ((_given_path(spec), "the model file"), (export_script, "--export-script"), (infer_script, "--infer-script")):
                if path:
                    check_writable(path, root, what, force=force)
        prepared = api.prepare(
            spec, input or (), dim or (), stages=stage, exporter=exporter, device=device, init_kwargs=init_kwargs,
            seed=seed, noise_rss=noise_rss, noise_gpu=noise_gpu, metric=metric, retries=retries, jobs=jobs, fresh=fresh,
            timeout_s=timeout, mem_cap=mem_cap, keep_autograd=keep_autograd, cache=not no_cache, config=config,
        )
        known = _fixer_names()
        for name in fixer or ():
            if name not in known:
                from bisector.errors import UserError

                raise UserError(f"unknown fixer {name!r}; see `bisector fixers` ({', '.join(known)})")
        if pick is not None and pick < 1:
            from bisector.errors import UserError

            raise UserError("--pick counts kept fixes from 1")
        prepared = _with_scripts(prepared, export_script, infer_script, exporter)
        with _Progress(sys.stderr.isatty() and not debug) as progress:
            finder = Finder(prepared.model, prepared.plan, prepared.options, events=progress, run_dir=run_dir)
            state.run_dir = str(finder.run.parent.parent)
            try:
                found = failure_culprits(finder.find())
                if finder.interrupted.is_set():
                    raise KeyboardInterrupt  # stopped: no repairs, and above all no --apply
                error = _failure_error(found.measure, skip={c.stage for c in found.culprits})
                if error is not None:
                    raise error
                if not json_out:
                    # The find report is ready long before the fixes are measured: show it now.
                    from bisector.report import render_find

                    render_find(found, _out_console())
                    sys.stdout.flush()
                report = Repairer(finder, found, allow_output_changes=allow_output_changes, only=fixer or ()).run()
            finally:
                finder.close()
        patches, notes = patches_for(report, root, export_script, infer_script, pick=pick)
        from bisector.patch import best_fixes

        chosen = {(e.region, e.stage) for e in best_fixes(report, pick)}
        for c in found.culprits:
            if report.fixed(c) and (c.region, c.stage) not in chosen:
                notes.append(f"{c.region or '<root>'} ({c.stage}): every kept fix costs more memory up front than the growth it "
                             "prevents over the declared range, so none is in the patch; take one with --pick N")
        data = report.to_json()
        # Proven on the project: the patched files compile, and the project's check command
        # ([tool.bisector] check) runs with them in a shadow copy; a failing patch is not offered.
        from bisector.batch import prove, run_check
        from bisector.config import load_config

        check = load_config(prepared.model.path, config).get("check")
        if not isinstance(check, str):
            check = None
        check_state = "no patch"
        if patches:
            offered, check_state = prove(root, check, patches)
            if not offered:
                notes.append(f"the patch is not offered: {check_state}")
                patches = []
        data["patches"] = [{"path": p.rel, "summary": p.summary, "diff": p.diff} for p in patches if p.changed]
        data["patch_notes"] = notes
        data["check"] = check_state
        extra, said = _publish(report, report_dir, bundle_dir, data["patches"])
        data.update(extra)
        written: list[str] = []
        if apply:
            if _SIGNALS:
                raise KeyboardInterrupt
            state.backups = str(root / ".bisector" / "backups")
            written = apply_patches(patches, root, force=force, written=state.written)
            data["applied"] = written
            if written and check:
                ok, why = run_check(root, check, [])  # the project as now written, in a shadow copy
                data["check_after_apply"] = "passed" if ok else f"failed: {why}"
        confirmed = _confirm(prepared, report, found, pick) if written else None
        if confirmed is not None:
            data["confirmed"] = {
                "verdict": confirmed.verdict,
                "stages": {s: r.to_json(samples=False) for s, r in confirmed.stages.items()},
            }
        if json_out:
            sys.stdout.write(json.dumps(stamp(data, "fix"), indent=2) + "\n")
        else:
            console = _out_console()
            render_fix(report, console, show_find=False)
            for note in notes:
                console.print(f"note: {note}", style="yellow", markup=False)
            if diff:
                console.print(combined_diff(patches) or "(no changes to show)", markup=False, highlight=False, soft_wrap=True)
            elif patches and any(p.changed for p in patches) and not apply:
                console.print("rerun with --diff to see the patch, --apply to write it", style="cyan")
            if written:
                console.print(f"applied: {', '.join(written)} (backups in {root / '.bisector' / 'backups'})", markup=False)
            if patches:
                console.print(f"check: {check_state}", markup=False)
            if data.get("check_after_apply"):
                console.print(f"check after --apply: {data['check_after_apply']}", markup=False)
            if confirmed is not None:
                parts = ", ".join(f"{s} {r.kind}" for s, r in confirmed.stages.items())
                console.print(f"re-measured after --apply (edited files, kept runtime settings): {parts}", markup=False)
        _said(said)
        if not found.culprits:
            return _measure_exit(found.measure)
        if str(data.get("check_after_apply", "")).startswith("failed"):
            return EXIT_FOUND  # the project's own check fails with what was written: never "clean"
        if confirmed is not None and not all(holds(c, confirmed.stages.get(c.stage)) for c in found.culprits):
            return EXIT_FOUND  # the written fix did not hold on a fresh measurement: say so in the exit code
        return EXIT_CLEAN if all(report.fixed(c) for c in found.culprits) else EXIT_FOUND

    return _guard(debug, body, state)


def _given_path(spec: str) -> Path:
    """The model file as the user wrote it, made absolute without following symlinks."""
    import os

    return Path(os.path.abspath(Path(spec.rpartition(":")[0] or spec).expanduser()))


def _with_scripts(prepared: Any, export_script: str | None, infer_script: str | None, exporter: str | None) -> Any:
    """The prepared run measured with the settings the user's scripts already apply to this
    model: a project patched by bisector measures as it will run."""
    from dataclasses import replace

    from bisector.errors import UserError

    for script, flag in ((export_script, "--export-script"), (infer_script, "--infer-script")):
        if script and not Path(script).is_file():
            raise UserError(f"{flag} {script} does not exist")
    back = _read_back(prepared.model.path, export_script, infer_script)
    if exporter:
        back.pop("exporter", None)  # the option wins over the script
    if not back:
        return prepared
    return replace(prepared, options=replace(prepared.options, probe=prepared.options.probe.with_overrides(back)))


def _read_back(model_path: str, export_script: str | None, infer_script: str | None) -> dict[str, Any]:
    """Settings the given scripts already apply to this model (its session, its export call)."""
    from bisector.patch import read_export
    from bisector.probe.types import merge_overrides
    from bisector.serving import read_serving

    key = Path(model_path).stem
    out: dict[str, Any] = {}
    for script, reader in ((export_script, read_export), (infer_script, read_serving)):
        if script:
            try:
                out = merge_overrides(out, reader(Path(script).read_text(encoding="utf-8"), key))
            except Exception:  # noqa: BLE001 - an unreadable script adds nothing; patching it says why
                pass
    return out


def _confirm(prepared: Any, report: Any, found: Any, pick: int | None = None) -> Any:
    """Re-measure the stages that had culprits from the files as now written (the probe loads the
    model source afresh, so source edits count), with the kept export and runtime settings as probe
    overrides (the probe does not run the user's export or serving scripts)."""
    from dataclasses import replace

    from bisector.measure import measure as run_measure
    from bisector.patch import best_fixes
    from bisector.repair import merge_probe

    probes: dict[str, Any] = {}
    for ev in best_fixes(report, pick):
        probes = merge_probe(probes, ev.probe)
    stages = tuple(dict.fromkeys(c.stage for c in found.culprits))
    options = replace(prepared.options, stages=stages, probe=prepared.options.probe.with_overrides(probes))
    return run_measure(prepared.model, prepared.plan, options)


def _publish(report: Any, report_dir: str | None, bundle_dir: str | None, patches: Any = ()) -> tuple[dict[str, Any], list[str]]:
    """HTML report and repro bundles when asked; find/fix keep the report document in their run
    directory either way (for `bisector report`). Returns what --json gains, and the lines saying
    where it wrote (printed by _said after the report, where a person looks last)."""
    from bisector.publish import publish

    said: list[str] = []
    return publish(report, report_dir, bundle_dir, patches, say=said.append), said


def _said(lines: list[str]) -> None:
    err = _err_console()
    for line in lines:
        err.print(line, markup=False, highlight=False)


@app.command("report")
def report_command(
    run_dir: Annotated[str, typer.Argument(help="A run directory (.bisector, .bisector/runs/...), a --report folder or a repair --out folder.", show_default=False)],
    out: Annotated[Optional[str], typer.Option("--out", help="Where to write the HTML. Default: beside the stored results.")] = None,
    debug: DebugOpt = False,
) -> int:
    """Render the HTML report again from stored results: no probe runs."""

    def body() -> int:
        from bisector.html_report import rerender

        for page in rerender(run_dir, out):
            _err_console().print(f"report: {page}", markup=False, highlight=False)
        return EXIT_CLEAN

    return _guard(debug, body)


@app.command()
def repair(
    config: ConfigOpt = None,
    manifest: Annotated[Optional[str], typer.Option("--manifest", help="A TOML ([[models]] tables) or JSON ({\"models\": [...]}) list of models, instead of pyproject's [[tool.bisector.models]].")] = None,
    out: Annotated[str, typer.Option("--out", help="Where patches, per-model results and the summary go.")] = ".bisector/repair",
    jobs: JobsOpt = None,
    models_at_once: Annotated[int, typer.Option("--models-at-once", help="Models repaired side by side (they share --jobs probes).")] = 2,
    allow_output_changes: AllowChangesOpt = False,
    fresh: FreshOpt = False,
    executor: Annotated[str, typer.Option("--executor", help="local (threads on this machine) or ray (one Ray task per model; pip install 'bisector[ray]').")] = "local",
    address: Annotated[Optional[str], typer.Option("--address", help="With --executor ray: the cluster to join (ray://HOST:10001, HOST:6379 or auto). Default: a Ray started on this machine.")] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", help="I/N: repair only this share of the models (a stable split by name), for CI matrices; join the outputs with `bisector merge`.")] = None,
    json_out: JsonOpt = False,
    report_dir: Annotated[Optional[str], typer.Option("--report", help="Write an HTML report per model and an index.html over all models into this folder.")] = None,
    debug: DebugOpt = False,
) -> int:
    """Find and fix every model of a migration project: one patch per model, a summary as JSON
    and a Markdown table. Resumes: models already done (same source, same options) are not probed
    again. Exit 0 when every model is clean or fixed, 1 when a culprit has no kept fix, 2 when a
    model could not be measured."""

    def body() -> int:
        from bisector import api
        from bisector.errors import UserError

        if models_at_once < 1:
            raise UserError("--models-at-once must be 1 or more")
        if executor not in ("local", "ray"):
            raise UserError(f"--executor {executor}: expected local or ray")
        if address and executor != "ray":
            raise UserError("--address names a Ray cluster: use it with --executor ray")
        if jobs is not None and jobs < 1:
            raise UserError("--jobs must be 1 or more")
        if executor == "ray":
            from bisector.fleet import require_ray

            require_ray()
        from bisector.batch import Shard

        part = Shard.parse(shard) if shard is not None else None
        err = _err_console()

        def progress(result: Any, state: Any) -> None:
            if not json_out:
                err.print(f"{result.status:<8} {result.spec}  ({result.wall_s:.0f} s)  "
                          f"[{state.done}/{state.total} done, {state.running} running, {state.queued} queued]", markup=False)

        summary = api.repair(config=config, manifest=manifest, out=out, jobs=jobs, models_at_once=models_at_once,
                             allow_output_changes=allow_output_changes, fresh=fresh, progress=progress, report_dir=report_dir,
                             executor=executor, address=address, shard=part)
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
    sys.stdout.write(f"\n{len(summary.results)} models: {counts}" + (f" ({resumed} resumed)" if resumed else "") + f"; summary in {summary.out}/summary.md\n")


@app.command()
def merge(
    outs: Annotated[list[str], typer.Argument(help="The --out folders of `bisector repair --shard I/N` runs.", show_default=False)],
    config: ConfigOpt = None,
    manifest: Annotated[Optional[str], typer.Option("--manifest", help="The manifest the shards ran from, when not pyproject's [[tool.bisector.models]].")] = None,
    out: Annotated[str, typer.Option("--out", help="Where the merged patches, per-model results and summary go.")] = ".bisector/repair",
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
    from fixers import all_fixers

    return [f.name for f in all_fixers()]


@app.command("fixers")
def list_fixers(json_out: JsonOpt = False) -> int:
    """List the fixers: what each changes, and the stages and verdicts it addresses."""
    from fixers import all_fixers

    rows = [{"name": f.name, "description": f.description, "stages": list(f.stages), "kinds": list(f.kinds)} for f in all_fixers()]
    if json_out:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return EXIT_CLEAN
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        sys.stdout.write(f"{r['name']:<{width}}  {'/'.join(r['stages']):<16} {'/'.join(r['kinds']):<18} {r['description']}\n")
    return EXIT_CLEAN


@app.command("schema")
def schema_command() -> int:
    """Print the JSON Schema every --json report and stored report follows (schema_version in
    each report says which)."""
    from bisector.contract import schema_text

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


@app.command("clean")
def clean_command(
    run_dir: RunDirOpt = None,
    remove: RemoveOpt = False,
    keep_days: KeepDaysOpt = None,
    max_size: MaxSizeOpt = None,
    backups: BackupsOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> int:
    """List the control cache and the run directory's runs, captures, repair output and backups,
    with sizes and ages; with --remove, delete them (all, or past --keep-days / --max-size)."""

    def body() -> int:
        import time

        from bisector.clean import clean
        from bisector.errors import UserError
        from bisector.find import RUN_DIR
        from bisector.measure import default_cache_dir
        from bisector.units import format_bytes, parse_size

        if keep_days is not None and keep_days < 0:
            raise UserError("--keep-days must be 0 or more")
        cap = parse_size(max_size, "--max-size") if max_size is not None else None
        now = time.time()
        root = Path(run_dir) if run_dir else Path.cwd() / RUN_DIR
        outcomes = clean(root, default_cache_dir(), keep_days, cap, backups=backups, delete=remove, now=now)
        if json_out:
            rows = [o.to_json(now) for o in outcomes]
            sys.stdout.write(json.dumps({"entries": rows, "removed": remove}, indent=2) + "\n")
        else:
            for o in outcomes:
                e, mark = o.entry, "kept"
                if o.selected:
                    mark = "removed" if o.removed else f"kept: {o.error}" if o.error else "to go"
                age = f"{e.age_days(now):7.1f} d"
                sys.stdout.write(f"{e.kind:<13} {format_bytes(e.size):>9} {age}  {mark:<8} {e.path}\n")
            freed = sum(o.entry.size for o in outcomes if (o.removed if remove else o.selected))
            total = sum(o.entry.size for o in outcomes)
            verb = "removed" if remove else "would remove"
            hint = " (rerun with --remove)" if freed and not remove else ""
            sys.stdout.write(f"{len(outcomes)} entries, {format_bytes(total)}; {verb} {format_bytes(freed)}{hint}\n")
        return EXIT_INTERNAL if any(o.error for o in outcomes) else EXIT_CLEAN

    return _guard(debug, body)


def _check_runtime(argv: list[str]) -> None:
    """One line before a probing command when ONNX Runtime is missing (exit 2 if a stage needs it)
    or installed twice over (a warning): the probes would otherwise fail with a long traceback."""
    from bisector.runtime_check import check_command_line

    problem = check_command_line(argv)
    if problem is None:
        return
    line, fatal = problem
    sys.stderr.write(f"{'error' if fatal else 'warning'}: {line}\n")
    if fatal:
        sys.exit(EXIT_USER)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors become one line and exit 2, like ours."""
    _install_signal_handlers()
    _check_runtime(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=argv, prog_name="bisector", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        sys.exit(128 + (_SIGNALS[0] if _SIGNALS else 2))
    except Exception as exc:  # noqa: BLE001
        ctx = getattr(exc, "ctx", None)
        if _is(exc, "NoArgsIsHelpError") and ctx is not None:
            sys.stdout.write(ctx.get_help() + "\n")
            sys.exit(EXIT_CLEAN)
        if _is(exc, "UsageError"):
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            sys.stderr.write(f"error: {exc.format_message()}{hint}\n")
            sys.exit(EXIT_USER)
        raise
    sys.exit(code if isinstance(code, int) else 0)
