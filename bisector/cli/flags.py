"""The options the commands share, declared once: typer reads flag, help, default and
`BISECTOR_*` variable from these annotations. Options only one command has live with it."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from bisector.model.choices import DEVICES, EXPORTERS, METRICS, STAGES

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

AllowChangesOpt = Annotated[
    bool,
    typer.Option(
        "--allow-output-changes", help="Keep fixes that change outputs by design (padding to multiples of 16)."
    ),
]
