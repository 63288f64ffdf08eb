"""Scripted repair over a folder of models, and the diffs applied to copies of the files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, run_cli

pytestmark = pytest.mark.probe

MODELS = {
    "list_append": ('inputs = ["x=B,32"]', "fixed"),
    "shape_cache": ('inputs = ["x=B,3,H,W"]\ndims = ["B=1:2", "H=16:96", "W=16:96"]', "fixed"),
    "clean_cnn": ('inputs = ["x=B,3,H,W"]\ndims = ["B=1:4", "H=8:32", "W=8:32"]', "clean"),
    "symbolic_leak": (
        'inputs = ["x=B,32"]\nstages = ["export"]\nexporter = "torchscript"\nfixers = ["symbolic-functions"]',
        "fixed",
    ),
    "native_leak": ('inputs = ["x=B,16"]', "unfixed"),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("migration")
    entries = []
    for name, (options, _) in MODELS.items():
        shutil.copy(SAMPLES / f"{name}.py", root / f"{name}.py")
        entries.append(f'[[tool.bisector.models]]\nspec = "{name}.py:Net"\n{options}\n')
    (root / "pyproject.toml").write_text('[tool.bisector]\nstages = ["eager"]\n\n' + "\n".join(entries))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


@pytest.fixture(scope="module")
def first_run(project: Path):
    return run_cli("repair", "--json", cwd=project)


def test_repair_writes_patches_and_a_summary(project: Path, first_run) -> None:
    assert first_run.returncode == 1, first_run.stderr  # native_leak has no fixer: exit 1
    summary = json.loads(first_run.stdout)
    status = {Path(m["spec"].split(":")[0]).stem: m["status"] for m in summary["models"]}
    assert status == {name: want for name, (_, want) in MODELS.items()}
    out = project / ".bisector" / "repair"
    table = (out / "summary.md").read_text()
    assert table.startswith("| model | status |") and "`list_append.py:Net` | fixed" in table
    assert json.loads((out / "summary.json").read_text())["counts"] == {"fixed": 3, "clean": 1, "unfixed": 1}
    for name in ("list_append", "shape_cache", "symbolic_leak"):
        assert (
            (out / "patches" / f"{name}.py.patch").read_text().startswith(f"diff --git a/{name}.py b/{name}.py\nindex ")
        )
    assert "| no patch |" in table  # a clean model gets no (empty) patch file


def test_a_second_run_resumes_without_probing(project: Path, first_run) -> None:
    r = run_cli("repair", cwd=project)
    assert r.returncode == 1
    assert "(5 resumed)" in r.stdout and "| `native_leak.py:Net` | unfixed" in r.stdout
    # -q: the count line alone, repair's verdict line (issue 25).
    quiet = run_cli("repair", "-q", cwd=project)
    assert quiet.returncode == 1 and quiet.stderr == "", quiet.stderr
    assert quiet.stdout.splitlines() == [r.stdout.splitlines()[-1]], quiet.stdout


@pytest.mark.parametrize("name", ["list_append", "shape_cache", "symbolic_leak"])
def test_each_patch_applies_measures_clean_and_is_idempotent(
    project: Path, first_run, name: str, tmp_path: Path
) -> None:
    patch = project / ".bisector" / "repair" / "patches" / f"{name}.py.patch"
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(SAMPLES / f"{name}.py", copy / f"{name}.py")
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    subprocess.run(["git", "apply", str(patch)], cwd=copy, check=True)
    options = dict(line.split(" = ", 1) for line in MODELS[name][0].splitlines())
    args = ["fix", f"{name}.py:Net", "--json", "--run-dir", str(tmp_path / "run")]
    for key, flag in (("inputs", "-i"), ("dims", "-d"), ("stages", "-s")):
        for value in json.loads(options.get(key, "[]")):
            args += [flag, value]
    if "exporter" in options:
        args += ["--exporter", json.loads(options["exporter"])]
    if "stages" not in options:
        args += ["-s", "eager"]
    again = run_cli(*args, cwd=copy)
    assert again.returncode == 0, again.stdout + again.stderr
    report = json.loads(again.stdout)
    assert report["culprits"] == [] and report["verdict"] == "clean"
    assert report["patches"] == []  # nothing left to change: applying twice is a no-op
