"""One stage that cannot run does not sink the model (issue 21, item 4), and the toolchain's growth
per new shape is not blamed on the model (item 5): pure functions over made-up reports."""

from __future__ import annotations

from types import SimpleNamespace

from bisector.find.localise import FindReport, StageSearch
from bisector.judge.attribution import NATIVE_TWIN_ENV, attribute_shapes, needs_native_twin
from bisector.judge.fail_on import FailOn
from bisector.judge.verdict import CLEAN, SHAPE_GROWTH, TOOLCHAIN_LEAK, judge
from bisector.lab.results import MeasureReport
from bisector.model.curve import MemoryCurve, Sample
from bisector.pipeline.failures import stage_errors, unexported
from bisector.pipeline.run import Status, _status, with_stage_errors, without_errors
from bisector.probe.types import ProbeCrashed, ProbeFailed, ProbeOptions
from bisector.repairs.results import ModelResult, RepairSummary

MB = 1e6
EXPORT_RAISED = ProbeFailed("export", "exporting the model failed: RuntimeError: cannot export\nmore lines")


def stage(kind: str, failure=None) -> SimpleNamespace:
    verdict = SimpleNamespace(bounded=None, kind=kind) if failure is None else None
    return SimpleNamespace(kind=kind, verdict=verdict, failure=failure, curve=None)


def found_with(stages: dict, culprits=()) -> FindReport:
    plan = SimpleNamespace(dims={})
    measure = MeasureReport(SimpleNamespace(label="m"), plan, stages, 0, 0.0, None)  # type: ignore[arg-type]
    searches = {c.stage: StageSearch(c.stage, stages[c.stage], culprits=(c,)) for c in culprits}
    return FindReport(measure, None, searches, 0, 0, 0.0, "")  # type: ignore[arg-type]


def test_a_stage_that_cannot_run_is_its_own_error_beside_the_others() -> None:
    found = found_with({"eager": stage("leak"), "export": stage("failed", EXPORT_RAISED)})
    errors = stage_errors(found)
    assert errors == {"export": "error: exporting the model failed: RuntimeError: cannot export"}
    assert with_stage_errors("fixed", errors) == (
        "fixed (export: error: exporting the model failed: RuntimeError: cannot export)"
    )
    # The status is the stages that ran: an eager stage with nothing failing is clean, not an error.
    found = found_with({"eager": stage("clean"), "export": stage("failed", EXPORT_RAISED)})
    report = SimpleNamespace(fixed=lambda c: True)
    assert _status(found, report, (), FailOn()) == Status.ERROR  # the failed stage sinks the model
    assert _status(without_errors(found, stage_errors(found)), report, (), FailOn()) == Status.CLEAN
    culprit = SimpleNamespace(region="rec", stage="eager", kind="leak", figures={})
    found = found_with({"eager": stage("leak"), "export": stage("failed", EXPORT_RAISED)}, [culprit])
    chosen = (SimpleNamespace(region="rec", stage="eager"),)
    assert _status(without_errors(found, stage_errors(found)), report, chosen, FailOn()) == Status.FIXED


def test_crashed_stages_are_errors_only_when_asked_and_nothing_measured_is_the_models_error() -> None:
    crashed = stage("crashed", ProbeCrashed("signal", "SIGKILL", None, ""))
    found = found_with({"eager": stage("clean"), "inference": crashed})
    assert stage_errors(found, crashed=False) == {}
    assert set(stage_errors(found)) == {"inference"}
    # No stage measured: the model's error as a whole, as before.
    assert stage_errors(found_with({"export": stage("failed", EXPORT_RAISED)})) == {}
    # A failed export that is a culprit (an operator the exporter lacks) is a fixer's, not an error.
    op = SimpleNamespace(stage="export", kind="unsupported-op")
    assert stage_errors(found_with({"eager": stage("clean"), "export": stage("failed", EXPORT_RAISED)}, [op])) == {}


FFT_UNSUPPORTED = ProbeFailed(
    "export",
    "exporting the model failed: UnsupportedOperatorError: Exporting the operator 'aten::fft_rfft' to ONNX "
    "opset version 17 is not supported",
)


def test_an_operator_no_fix_made_export_is_that_stages_error_once_the_fixers_tried() -> None:
    op = SimpleNamespace(region="", stage="inference", kind="unsupported-op", figures={}, hint="")
    leak = SimpleNamespace(region="rec", stage="eager", kind="leak", figures={})
    found = found_with({"eager": stage("leak"), "inference": stage("failed", FFT_UNSUPPORTED)}, [leak, op])
    assert stage_errors(found) == {}  # before the fixers: a culprit they may make export
    errors = unexported(found, kept=lambda c: False)
    assert list(errors) == ["inference"] and "aten::fft_rfft" in errors["inference"]
    assert errors["inference"].startswith("error: exporting the model failed")
    # The eager leak fixed, the operator nobody could export reported beside it: "fixed (inference: error ...)".
    report = SimpleNamespace(fixed=lambda c: c.kind == "leak")
    chosen = (SimpleNamespace(region="rec", stage="eager"),)
    assert _status(found, report, chosen, FailOn()) == Status.UNFIXED  # as it was: the operator sank it
    assert _status(without_errors(found, errors), report, chosen, FailOn()) == Status.FIXED
    # A fix that made it export (kept, though it may leak then) leaves the culprit to the status.
    assert unexported(found, kept=lambda c: c.kind == "unsupported-op") == {}
    # Nothing else measured: the model's own status (unfixed), not a clean model beside an error.
    assert unexported(found_with({"inference": stage("failed", FFT_UNSUPPORTED)}, [op]), kept=lambda c: False) == {}


def test_the_summary_says_both() -> None:
    row = ModelResult("m", "m.py:Net", "fixed", stage_errors={"export": "error: cannot export"})
    table = RepairSummary((row,), "out", 0.0).markdown()
    assert "| fixed (export: error: cannot export) |" in table
    assert RepairSummary((row,), "out", 0.0).exit_code == 0


def conv_curve(per_shape: float, objects_per_shape: float = 0.0) -> MemoryCurve:
    """Flat while shapes repeat; per_shape bytes (and objects) more on every new shape."""
    samples, level, objs = [], 300 * MB, 1000.0
    for phase, n in (("warmup", 8), ("repeat", 16), ("novel", 8), ("within", 6)):
        for k in range(n):
            if phase in ("novel", "within"):
                level += per_shape
                objs += objects_per_shape
            samples.append(Sample(phase, {"H": k}, {"rss": level, "objects": objs}))
    return MemoryCurve(samples=tuple(samples))


def test_growth_per_new_shape_that_goes_with_the_primitive_cache_off_is_the_toolchains() -> None:
    verdict = judge(conv_curve(1 * MB), None)
    assert verdict.kind == SHAPE_GROWTH and needs_native_twin(verdict, "eager", "cpu")
    assert not needs_native_twin(verdict, "inference", "cpu") and not needs_native_twin(verdict, "eager", "cuda")
    twin = judge(conv_curve(30_000), None)
    assert twin.kind == CLEAN
    got = attribute_shapes(verdict, twin)
    assert got.kind == TOOLCHAIN_LEAK
    assert "oneDNN primitive cache" in got.reasons[-1] and "not your model's code" in got.reasons[-1]
    # Still growing with the cache off: the model's own native memory, left as it was.
    assert attribute_shapes(verdict, verdict) == verdict
    assert attribute_shapes(verdict, None) == verdict


def test_objects_that_grow_per_shape_are_the_models_and_need_no_twin() -> None:
    verdict = judge(conv_curve(1 * MB, objects_per_shape=5), None)
    assert verdict.kind == SHAPE_GROWTH and not needs_native_twin(verdict, "eager", "cpu")


def test_the_twin_sets_its_environment_without_changing_other_probes_keys() -> None:
    assert "env" not in ProbeOptions().to_json()  # cached results of every other probe stay valid
    twin = ProbeOptions(env=NATIVE_TWIN_ENV)
    assert ProbeOptions.from_json(twin.to_json()) == twin
