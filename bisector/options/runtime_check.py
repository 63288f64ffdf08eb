"""Which ONNX Runtime is installed: none, one, or two that overwrite each other.

onnxruntime, onnxruntime-gpu and the vendor builds (-directml, -openvino, ...) all install the
same `onnxruntime` module; with two in one site-packages, whichever installed last wins file by
file, and the result may load neither's providers. bisector therefore leaves the choice to the
user (`bisector[cpu]` or `bisector[gpu]`) and checks at start-up, from package metadata alone
(no import: the parent process never imports onnxruntime).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bisector.options.table import OPTIONS

MODULE = "onnxruntime"
INSTALL_HINT = "pip install 'bisector[cpu]' (or 'bisector[gpu]' for CUDA)"


@dataclass(frozen=True)
class Runtime:
    """A distribution that installs the onnxruntime module, and the folder it installs into."""

    name: str
    version: str
    location: str


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _provides_module(dist: Any) -> bool:
    """Whether the distribution installs the top-level onnxruntime package (onnxruntime-extensions
    and onnxruntime-genai share the prefix but install modules of their own)."""
    top_level = dist.read_text("top_level.txt")
    if top_level is not None:
        return MODULE in top_level.split()
    return any(f.parts and f.parts[0] == MODULE for f in dist.files or ())


def _candidates() -> Iterable[Any]:
    """Distributions on sys.path whose metadata folder is named onnxruntime*: a listing of each
    site folder, where metadata.distributions() would read every package's METADATA (~0.1 s)."""

    for folder in sys.path:
        try:
            names = os.listdir(folder or ".")
        except OSError:
            continue
        for name in names:
            if name.lower().startswith(MODULE) and name.endswith((".dist-info", ".egg-info")):
                yield metadata.PathDistribution(Path(folder or ".", name))


def installed_runtimes(distributions: Iterable[Any] | None = None) -> list[Runtime]:
    """The installed distributions that provide the onnxruntime module, each once."""
    found: dict[tuple[str, str], Runtime] = {}
    for dist in _candidates() if distributions is None else distributions:
        name = _normalized(dist.metadata["Name"] or "")
        if not name.startswith(MODULE) or not _provides_module(dist):
            continue
        location = str(dist.locate_file(""))
        found.setdefault((name, location), Runtime(name, dist.version, location))
    return list(found.values())


def clobbering(runtimes: Sequence[Runtime]) -> list[Runtime]:
    """Runtimes that share a site folder with another one: they overwrite each other's files. (One
    in a venv and another in the system site-packages do not: the venv's shadows the other.)"""
    by_location: dict[str, list[Runtime]] = {}
    for r in runtimes:
        by_location.setdefault(r.location, []).append(r)
    return [r for group in by_location.values() if len(group) > 1 for r in group]


def runtime_problem(runtimes: Sequence[Runtime], needs_runtime: bool | None) -> tuple[str, bool] | None:
    """One line about the installed runtimes, and whether it is an error (else a warning); None
    when all is well. needs_runtime: whether a stage that runs ONNX Runtime (inference) was asked
    for; None when the command line does not say (repair: each model's entry does)."""
    if not runtimes:
        if needs_runtime is False:
            return None
        line = f"no ONNX Runtime installed, which the inference stage needs; {INSTALL_HINT}"
        if needs_runtime is None:
            return line, False
        return line + ", or measure without it (--stage eager --stage export)", True
    both = clobbering(runtimes)
    if both:
        names = " and ".join(f"{r.name} {r.version}" for r in both)
        return (
            f"{names} are both installed and overwrite each other's onnxruntime module; keep one: "
            f"pip uninstall -y {' '.join(r.name for r in both)} && {INSTALL_HINT}"
        ), False
    return None


# Commands that run probes; the others (--help, --version, fixers, schema, clean, report, merge)
# work without any runtime and are never held up by one.
PROBING_COMMANDS = ("measure", "find", "fix", "repair")
INFERENCE = "inference"


# --stage's flags and variable, from the option table: the runtime is checked before typer parses.
_STAGE = OPTIONS["stages"]


def _asked_stages(args: Sequence[str]) -> list[str]:
    """The values of --stage/-s on a command line (--stage X, --stage=X, -s X, -sX)."""
    long = [f for f in _STAGE.flags if f.startswith("--")]
    short = [f for f in _STAGE.flags if not f.startswith("--")]
    stages: list[str] = []
    it = iter(args)
    for arg in it:
        if arg in _STAGE.flags:
            stages.append(next(it, ""))
        elif any(arg.startswith(f + "=") for f in long):
            stages.append(arg.split("=", 1)[1])
        elif not arg.startswith("--"):
            stages += [arg[len(f) :] for f in short if arg.startswith(f) and len(arg) > len(f)][:1]
    return stages


def check_command_line(
    argv: Sequence[str], distributions: Iterable[Any] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, bool] | None:
    """The runtime problem worth one line before this command runs, and whether it stops it. Only
    stages the command line (or BISECTOR_STAGE) names decide here; stages that come from
    [tool.bisector] or the defaults are known once the run is prepared (``stages_problem``)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in PROBING_COMMANDS or "--help" in argv or "-h" in argv:
        return None
    environ = os.environ if environ is None else environ
    stages = _asked_stages(argv) or environ.get(_STAGE.env or "", "").split()
    runtimes = installed_runtimes(distributions)
    if not stages and not runtimes and command != "repair":
        return None  # decided after prepare, from the stages the run will measure
    # repair's stages come from each entry: a missing runtime is a warning there.
    needs: bool | None = INFERENCE in stages if stages else None
    return runtime_problem(runtimes, needs)


def stages_problem(stages: Iterable[str], distributions: Iterable[Any] | None = None) -> str | None:
    """Once the stages of a run are known: the error line when one needs a runtime that is missing."""
    if INFERENCE not in stages or installed_runtimes(distributions):
        return None
    problem = runtime_problem([], True)
    return problem[0] if problem else None
