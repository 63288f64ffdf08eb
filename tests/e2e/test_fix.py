"""`bisector fix` on sample models: the kept fixes flatten the curve, measured again on their own."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bisector import api
from bisector.fix.sources import shadow_copy
from bisector.lab.measure import measure
from bisector.pipeline import run as pipeline
from tests.conftest import SAMPLES, run_cli

pytestmark = pytest.mark.probe


def fix(spec: str, inputs, dims, stages, pool, tmp_path, exporter=None, only=()):
    """The one find -> fix path (pipeline.fix), without patches of files."""
    p = api.prepare(spec, inputs, dims, stages=stages, exporter=exporter, run_dir=str(tmp_path))
    outcome = pipeline.fix(p, pipeline.FixRequest(fixers=tuple(only), patch=False), pool=pool)
    return p, outcome.found, outcome.report


def remeasure(p, evaluation, stage, pool, tmp_path):
    """The kept fix on its own, with another seed: a fresh measurement of the whole model."""
    model = shadow_copy(p.model, evaluation.edits, tmp_path / "again") if evaluation.edits else p.model
    options = replace(
        p.options, stages=(stage,), seed=p.options.seed + 1, probe=p.options.probe.with_overrides(evaluation.probe)
    )
    return measure(model, p.plan, options, pool=pool).stages[stage]


def test_append_only_list_is_fixed_by_a_source_edit(pool, tmp_path) -> None:
    # The family's name selects its members (the only fixers for an eager leak anyway).
    p, found, report = fix(
        f"{SAMPLES / 'list_append.py'}:Net", ["x=B,32"], [], ["eager"], pool, tmp_path, only=("python-leaks",)
    )
    kept = report.kept
    assert kept and kept[0].fixer == "append-only" and kept[0].region == "blocks.1"
    best = kept[0]
    assert best.equivalent and best.max_abs_diff == 0
    assert best.before["objects_per_call"] == 1 and best.after["kind"] == "clean"
    # bounded, not deleted: what the list keeps stays readable (the last few)
    assert "del self.history[:-4]" in best.edits[0].after or "deque" in best.edits[0].after
    assert (SAMPLES / "list_append.py").read_text() == best.edits[0].before  # the user's file untouched
    again = remeasure(p, best, "eager", pool, tmp_path)
    assert again.kind == "clean", again.verdict.reasons


def test_symbolic_function_is_rewritten(pool, tmp_path) -> None:
    p, found, report = fix(
        f"{SAMPLES / 'symbolic_leak.py'}:Net",
        ["x=B,32"],
        [],
        ["export"],
        pool,
        tmp_path,
        exporter="torchscript",
        only=("symbolic-functions",),
    )
    (best,) = report.kept
    assert best.region == "blocks.0.act" and "_BUILT.append" not in best.edits[0].after
    assert best.after["kind"] == "clean" and best.equivalent
    assert remeasure(p, best, "export", pool, tmp_path).kind == "clean"


def test_shape_cache_is_bounded(pool, tmp_path) -> None:
    p, found, report = fix(
        f"{SAMPLES / 'shape_cache.py'}:Net", ["x=B,3,H,W"], ["B=1:2", "H=16:96", "W=16:96"], ["eager"], pool, tmp_path
    )
    # Two fixers bound the same per-shape cache (shape-cache evicts in place, bounded-memo swaps in
    # an LRU dict): both keep the cache working, and the eviction re-measures clean on its own.
    # The find's one culprit, exactly (this is the default run's find of the sample: test_zoo_find's is slow).
    assert [(c.region, c.stage, c.kind) for c in found.culprits] == [("pos", "eager", "shape-growth")]
    kept = report.kept
    assert {e.fixer for e in kept} <= {"shape-cache", "bounded-memo"} and all(e.region == "pos" for e in kept)
    assert not any(e.removes_behaviour for e in kept)
    best = next(e for e in kept if e.fixer == "shape-cache")
    assert "self.cache.pop" in best.edits[0].after
    assert remeasure(p, best, "eager", pool, tmp_path).kind == "clean"


# A smaller range than the sample's own (bench/fix_zoo.py runs that one): the same arena
# staircase, cheaper probes. The CLI test below reuses this run directory's results.
DYN = ["-i", "x=B,3,H,W", "-d", "B=1:8", "-d", "H=16:64", "-d", "W=16:64"]


@pytest.fixture(scope="module")
def dyn_run(tmp_path_factory):
    return tmp_path_factory.mktemp("dynamic_cnn_run")


def test_dynamic_cnn_growth_per_new_shape_drops_by_90_percent(pool, dyn_run) -> None:
    p, found, report = fix(
        f"{SAMPLES / 'dynamic_cnn.py'}:Net",
        ["x=B,3,H,W"],
        ["B=1:8", "H=16:64", "W=16:64"],
        ["inference"],
        pool,
        dyn_run,
        only=("ort-options",),
    )
    assert [c.region for c in found.culprits] == [""]
    best = report.kept[0]
    before = best.before["growth_bytes_per_new_shape"]
    after = best.after["growth_bytes_per_new_shape"] if best.after["kind"] != "clean" else 0.0
    assert found.measure.stages["inference"].kind == "shape-growth" and before > 1e6
    assert after <= 0.1 * before, (before, after)
    assert best.equivalent
    dropped = [e for e in report.evaluations if not e.kept]
    assert dropped and all(e.reason.startswith(("dropped", "not kept")) for e in dropped)
    again = remeasure(p, best, "inference", pool, dyn_run)
    assert again.kind == "clean" or again.verdict.growth_bytes_per_new_shape <= 0.1 * before


def test_apply_refuses_a_script_outside_the_project(dyn_run, tmp_path) -> None:
    outside = tmp_path / "serve.py"
    outside.write_text('import onnxruntime\nsession = onnxruntime.InferenceSession("m.onnx")\n')
    r = run_cli(
        "fix",
        str(SAMPLES / "dynamic_cnn.py") + ":Net",
        *DYN,
        "-s",
        "inference",
        "--fixer",
        "ort-options",
        "--infer-script",
        str(outside),
        "--apply",
        "--pick",
        "1",
        "--run-dir",
        str(dyn_run),
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "outside the project root" in r.stderr and "nothing was written" in r.stderr
    assert outside.read_text() == 'import onnxruntime\nsession = onnxruntime.InferenceSession("m.onnx")\n'


def test_fix_apply_writes_the_edit_backs_up_and_confirms(tmp_path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'user-models'\n")
    model = project / "list_append.py"
    original = (SAMPLES / "list_append.py").read_text()
    model.write_text(original)
    r = run_cli(
        "fix", f"{model}:Net", "-i", "x=B,32", "-s", "eager", "--json", "--apply", "--run-dir", str(tmp_path / "run")
    )
    assert r.returncode == 0, r.stderr  # every culprit has a kept fix, and it held when measured again
    data = json.loads(r.stdout)
    keys = {
        "fixer",
        "region",
        "stage",
        "before_bytes_per_call",
        "after_bytes_per_call",
        "before_bytes_per_new_shape",
        "after_bytes_per_new_shape",
        "equivalent",
        "max_abs_diff",
        "kept",
        "reason",
    }
    assert data["fixes"] and all(keys <= set(f) for f in data["fixes"])
    assert any(f["kept"] for f in data["fixes"])
    (patch,) = data["patches"]
    assert patch["path"] == "list_append.py" and patch["diff"].startswith(
        "diff --git a/list_append.py b/list_append.py\nindex "
    )
    assert data["applied"] == ["list_append.py"]
    assert model.read_text() != original and "del self.history[:-4]" in model.read_text()  # bounded, not deleted
    (backup,) = (project / ".bisector" / "backups").glob("*/list_append.py")
    assert backup.read_text() == original
    assert data["confirmed"]["stages"]["eager"]["verdict"] == "clean"


def test_unknown_fixer_is_a_user_error(tmp_path) -> None:
    r = run_cli(
        "fix", f"{SAMPLES / 'list_append.py'}:Net", "-i", "x=B,32", "--fixer", "magic", "--run-dir", str(tmp_path)
    )
    assert r.returncode == 2 and "unknown fixer 'magic'" in r.stderr


def test_an_operator_the_exporter_lacks_gets_a_symbolic(tmp_path) -> None:
    from tests.conftest import FIXTURES

    spec = f"{FIXTURES / 'operators.py'}:PositionsFromMask"
    small = ["-i", "x=B,T,8", "-d", "B=1:3", "-d", "T=5:24", "-s", "export", "--exporter", "torchscript"]
    measured = run_cli("measure", spec, *small)
    assert measured.returncode == 2 and "bisector fix` tries a symbolic for aten::diff" in measured.stderr
    r = run_cli("fix", spec, *small, "--fixer", "missing-symbolic", "--json", "--run-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["culprits"][0]["kind"] == "unsupported-op"
    kept = [f for f in data["fixes"] if f["kept"]]
    # aten::diff alone exports, but the graph's CumSum on bool does not load: not kept.
    assert any("aten::diff, aten::cumsum" in f["summary"] for f in kept)
    assert not any(f["summary"].startswith("register a symbolic for aten::diff ") for f in kept)
    assert all(f["equivalent"] for f in kept)
    (patch,) = data["patches"]
    assert patch["path"] == "export_onnx.py"
    assert "+torch.onnx.register_custom_op_symbolic('aten::diff', bisector_diff_symbolic, 13)" in patch["diff"]
    assert "dynamo=False" in patch["diff"]


def test_the_new_export_file_runs(dyn_run, tmp_path) -> None:
    """The export_onnx.py a settings-only fix writes is code that runs: it exports the model and
    opens a session with the kept settings (the warm-up included)."""
    import subprocess
    import sys

    r = run_cli(
        "fix",
        str(SAMPLES / "dynamic_cnn.py") + ":Net",
        *DYN,
        "-s",
        "inference",
        "--fixer",
        "ort-options",
        "--json",
        "--pick",
        "1",
        "--run-dir",
        str(dyn_run),
    )
    assert r.returncode == 0, r.stderr
    (patch,) = [p for p in json.loads(r.stdout)["patches"] if p["path"] == "export_onnx.py"]
    text = "".join(
        line[1:] + "\n" for line in patch["diff"].splitlines() if line.startswith("+") and not line.startswith("+++ ")
    )
    (tmp_path / "export_onnx.py").write_text(text)
    (tmp_path / "sample_models").symlink_to(SAMPLES)
    check = (
        "import numpy, export_onnx\n"
        "s = export_onnx.make_session(export_onnx.export('m.onnx'))\n"
        "for shape in [(1, 3, 16, 16), (8, 3, 64, 40)]:\n"
        "    out = s.run(None, {s.get_inputs()[0].name: numpy.zeros(shape, numpy.float32)})\n"
        "print('ran', out[0].shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ran (8," in done.stdout
