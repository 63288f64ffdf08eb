"""A project shaped unlike tests/projects/catalog (tests/projects/registry): models listed in a
registry, one export call for all of them with per-model settings in tables, and a pool that builds
each session lazily from an os.path.join path (issue 21, items 2 and 3). Its settings are read from
the tables at each model's entry; two models' serving settings compose into one patch keyed by the
pool's `name`; the patch applies with git and the project's scripts still run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bisector.patching.export_script import read_export
from bisector.patching.from_report import ModelWork, compose
from bisector.patching.serving import read_serving, read_table
from bisector.spec import ModelSpec, build_input_plan

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
    ]
    assert compose(works, project)[0] == []  # applied: nothing more to patch
