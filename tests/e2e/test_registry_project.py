"""A project shaped unlike tests/projects/catalog (tests/projects/registry): models listed in a
registry, one export call for all of them with per-model settings in tables, and a pool that builds
each session lazily from an os.path.join path (issue 21). Its settings are read from the tables at
each model's entry; two models' serving settings compose into one patch keyed by the pool's `name`;
the patch applies with git and the project's scripts still run.

And `bisector repair` on it, end to end: the denoiser's only finding is its ONNX Runtime arena's
bounded growth, within its budget (clean, with its ceiling); the spectral model does not export and
its eager forward leaks (fixed, with the export's error beside it); the patches apply with git, the
project's convert and serve scripts run, every model's documented feature still holds, and a second
repair finds nothing to patch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bisector.model.spec import ModelSpec, build_input_plan
from bisector.patching.export_script import read_export
from bisector.patching.from_report import ModelWork, compose
from bisector.patching.serving import read_serving, read_table
from tests.conftest import run_cli

PROJECT = Path(__file__).resolve().parents[1] / "projects" / "registry"


def git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True, capture_output=True, text=True
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    shutil.copytree(PROJECT, root, ignore=shutil.ignore_patterns("__pycache__", "artifacts", ".bisector"))
    git("init", "-q", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-qm", "as the team has it", cwd=root)
    return root


def run(project: Path, script: str) -> str:
    r = subprocess.run([sys.executable, script], cwd=project, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, script + r.stderr
    return r.stdout


def test_tables_are_read_and_two_models_patch_one_lazy_pool_by_its_name(project: Path) -> None:
    convert = (project / "convert.py").read_text()
    assert read_export(convert, "mixer") == {
        "exporter": "torchscript",
        "export_kwargs": {
            "input_names": ["tokens"],
            "dynamic_axes": {"tokens": {0: "batch", 1: "length"}},
            "opset_version": 17,
        },
    }
    assert read_export(convert, "scorer")["export_kwargs"]["input_names"] == ["feats"]
    pool = project / "serve" / "pool.py"
    works = [
        ModelWork(
            "mixer",
            (),
            ({"warmup": "largest", "session_options": {"enable_mem_pattern": False}},),
            None,
            build_input_plan(["tokens=B,L,5"], ["B=1:4", "L=2:16"]),
            ModelSpec(str(project / "models" / "mixer.py"), "Mixer"),
            str(project / "convert.py"),
            str(pool),
        ),
        ModelWork(
            "scorer",
            (),
            ({"run_options": {"memory.enable_memory_arena_shrinkage": "cpu:0"}},),
            None,
            build_input_plan(["feats=B,6"], ["B=1:8"]),
            ModelSpec(str(project / "models" / "scorer.py"), "Scorer"),
            str(project / "convert.py"),
            str(pool),
        ),
    ]
    patches, notes, _ = compose(works, project)
    assert notes == {"mixer": [], "scorer": []}
    (patch,) = patches
    assert patch.rel == "serve/pool.py"
    (project / "pool.patch").write_text(patch.diff)
    git("apply", "pool.patch", cwd=project)
    served = pool.read_text()
    assert (
        'self.sessions[name] = _bisector_session(ort.InferenceSession(path, providers=["CPUExecutionProvider"], '
        "sess_options=_bisector_session_options(name, None)), name)" in served
    )
    assert read_table(served) == {
        "mixer": {"session_options": {"enable_mem_pattern": False}, "warm_up_largest": [{0: 4, 1: 16}]},
        "scorer": {"run_options": {"memory.enable_memory_arena_shrinkage": "cpu:0"}},
    }
    assert read_serving(served, "mixer")["warmup"] == "largest" and "warmup" not in read_serving(served, "scorer")
    run(project, "convert.py")
    out = run(project, "serve/pool.py")
    # The models still answer as before: each batch size comes back with its own shape.
    assert out.splitlines() == [
        "scorer (1, 1)",
        "scorer (3, 1)",
        "scorer (2, 1)",
        "mixer (1, 4, 5)",
        "mixer (3, 4, 5)",
        "mixer (2, 4, 5)",
        "denoiser (1, 3, 32, 48)",
        "denoiser (2, 3, 64, 40)",
        "denoiser (1, 3, 20, 20)",
        "spectral (1, 2)",
        "spectral (3, 2)",
        "spectral (2, 2)",
    ]
    assert compose(works, project)[0] == []  # applied: nothing more to patch


def by_model(summary: dict) -> dict:
    return {Path(m["spec"].split(":")[0]).stem: m for m in summary["models"]}


# Each model's documented feature (its module's docstring), through the pool as production serves it.
FEATURES = """
import numpy as np, torch
from models.audio.spectral import Spectral
from serve.pool import SessionPool
pool = SessionPool()
rng = np.random.default_rng(1)
scores = pool.predict("scorer", rng.standard_normal((5, 6), dtype=np.float32))
assert scores.shape == (5, 1), scores.shape
weights = pool.predict("mixer", rng.standard_normal((2, 7, 5), dtype=np.float32))
assert np.allclose(weights.sum(-1), 1, atol=1e-5), weights.sum(-1)
for size in ((1, 3, 50, 70), (3, 3, 96, 96), (1, 3, 17, 33)):
    assert pool.predict("denoiser", rng.standard_normal(size, dtype=np.float32)).shape == size, size
m = Spectral()
for _ in range(50):
    m(torch.randn(2, 32))
recent = m.recent_spectra()
assert 1 <= len(recent) <= 8 and recent[-1].shape == (2, 17), len(recent)
print("ok")
"""


@pytest.mark.probe
def test_repair_fixes_what_it_can_reports_the_rest_and_a_second_repair_is_clean(project: Path) -> None:
    first = run_cli("repair", "--json", cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    models = by_model(json.loads(first.stdout))
    assert {k: m["status"] for k, m in models.items()} == {
        "scorer": "clean",
        "mixer": "clean",
        "denoiser": "clean",
        "spectral": "fixed",
    }, json.dumps(models, indent=1)
    # The denoiser's arena grows to the largest declared image and stays: its ceiling, within its budget.
    denoiser = models["denoiser"]
    (ceiling,) = denoiser["ceilings"]["inference"]
    assert denoiser["budget"] == 2e9 and 0 < ceiling["growth_bytes"] < ceiling["peak_bytes"] < 2e9
    assert ceiling["at"] == {"B": 4, "H": 96, "W": 96} and not denoiser["patches"]
    # The spectral model cannot export: that stage's error, beside the eager leak fixed.
    spectral = models["spectral"]
    assert set(spectral["stage_errors"]) == {"inference"} and "aten::fft_rfft" in spectral["stage_errors"]["inference"]
    assert spectral["patches"] == ["models__audio__spectral.py.patch"] and spectral["check"] == "passed"
    table = (project / ".bisector" / "repair" / "summary.md").read_text()
    assert "inference shape-growth (bounded: settles at +" in table and "within the budget 2.0 GB" in table
    assert "| fixed (inference: error: " in table
    patches = sorted((project / ".bisector" / "repair" / "patches").glob("*.patch"))
    assert [p.name for p in patches] == ["models__audio__spectral.py.patch"]
    for p in patches:
        git("apply", str(p), cwd=project)
    assert "not converted spectral" in run(project, "convert.py")
    assert len(run(project, "serve/pool.py").splitlines()) == 12
    features = subprocess.run(
        [sys.executable, "-c", FEATURES], cwd=project, capture_output=True, text=True, timeout=300
    )
    assert features.returncode == 0 and "ok" in features.stdout, features.stderr
    again = run_cli("repair", "--json", cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    models = by_model(json.loads(again.stdout))
    assert {k: m["status"] for k, m in models.items()} == dict.fromkeys(models, "clean"), json.dumps(models, indent=1)
    assert set(models["spectral"]["stage_errors"]) == {"inference"}
    # Only the patched model is probed again (models/audio/ is its own folder): the others, same
    # source, options and scripts, are resumed, which keeps this second run cheap.
    assert {k for k, m in models.items() if m["resumed"]} == {"scorer", "mixer", "denoiser"}
    assert not list((project / ".bisector" / "repair" / "patches").glob("*.patch"))
