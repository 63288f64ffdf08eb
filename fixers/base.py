"""What a fixer is: it looks at a culprit and proposes candidates. It never measures.

A candidate changes one or more of: how the model is exported (exporter, export options, an
onnxsim pass), how ONNX Runtime runs it (session, provider and run options, inputs rounded up),
or the model's own source (edits to the user's files). The repair engine applies each candidate
in a probe, re-measures, checks the outputs, and keeps only what flattens the curve.

Each fixer carries examples of where it applies and where it does not; the tests are generated
from them (tests/fixers/test_examples.py), in the spirit of Fixit's VALID/INVALID cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from bisector.model.choices import DEFAULT_EXPORTER
from bisector.model.kinds import Kind

LEAK, SHAPE_GROWTH = Kind.LEAK, Kind.SHAPE_GROWTH
# Growth torch or ONNX Runtime keep of their own accord: its fixes are workarounds around the
# toolchain (export in a child process, another exporter, runtime options), measured like any other.
TOOLCHAIN_LEAK = Kind.TOOLCHAIN_LEAK
# Not a memory finding: the stage could not run because the exporter lacks (or mis-emits) an
# operator. A fixer that makes it export is measured and checked like any other.
UNSUPPORTED_OP = Kind.UNSUPPORTED_OP
# A family of fixers: its name selects every member (`--fixer python-leaks`).
PYTHON_LEAKS = "python-leaks"


@dataclass(frozen=True)
class FixTarget:
    """A culprit as a fixer sees it."""

    stage: str
    kind: str
    region: str = ""
    region_type: str = ""  # the module's class, qualified ("mypkg.model.Recorder")
    own_code: bool = True
    figures: Mapping[str, Any] = field(default_factory=dict)
    exporter: str = DEFAULT_EXPORTER  # the exporter the measurement used
    device: str = "cpu"
    dims: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # symbol ranges
    fixed_inputs: bool = False  # no symbol varies
    sources: Mapping[str, str] = field(default_factory=dict)  # user files: path -> text
    onnxruntime_opset: int | None = None  # the newest ai.onnx opset the installed runtime runs

    @property
    def region_class(self) -> str:
        """The culprit module's class, unqualified ("Recorder"); "" when unknown."""
        return self.region_type.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class SourceEdit:
    path: str
    before: str
    after: str
    summary: str


@dataclass(frozen=True)
class Candidate:
    fixer: str
    summary: str
    # ProbeOptions overrides: exporter, export_kwargs, session_options, provider_options,
    # run_options, input_transform ("round:16"), post_export (("onnxsim",)).
    probe: Mapping[str, Any] = field(default_factory=dict)
    edits: tuple[SourceEdit, ...] = ()
    changes_outputs: bool = False  # by design (padding): kept only with the user's opt-in
    size: int = 1  # settings or lines changed; smaller ranks higher among equal savings
    # Why the candidate takes away something the user's code relies on (data read elsewhere);
    # "" when it keeps behaviour. Such a fix ranks after every one that keeps it.
    removes_behaviour: str = ""
    # The entries (items, rows, calls) the fix lets the container keep: it still grows over the
    # first `bound` new shapes (or calls) and then stops, and is judged on what comes after.
    bound: int | None = None


@dataclass(frozen=True)
class Example:
    """A target the fixer must (applies=True) or must not (False) propose a candidate for."""

    name: str
    target: FixTarget
    applies: bool
    expect: str = ""  # a text some candidate's summary, probe settings or edited source contains
    # Where candidates edit the source: every edit's result, exactly, in the order proposed
    # (as Fixit's expected_replacement): the generated test compares them byte for byte.
    edited: tuple[str, ...] = ()


@runtime_checkable
class Fixer(Protocol):
    name: str
    description: str
    stages: tuple[str, ...]
    kinds: tuple[str, ...]
    examples: tuple[Example, ...]

    def propose(self, target: FixTarget) -> list[Candidate]: ...


def family_of(fixer: Fixer) -> str:
    """The family a fixer belongs to ("python-leaks"), "" for none. An optional attribute, so a
    plugin written without it is still a Fixer."""
    return str(getattr(fixer, "family", "") or "")


def addresses(fixer: Fixer, target: FixTarget) -> bool:
    return target.stage in fixer.stages and target.kind in fixer.kinds
