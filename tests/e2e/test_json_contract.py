"""Every command's JSON follows the shipped schema (issue 13, item 3): measure, find and fix on the
cheapest sample (eager only, B up to 4), the documents find and fix keep in their run directory, a
one-model repair's output and summary.json, and merge. (run_cli also checks the --json output of
every other e2e test against the same schema.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bisector.common.contract import SCHEMA_VERSION
from tests.conftest import SAMPLES, run_cli
from tests.contract import assert_contract

pytestmark = pytest.mark.probe

SMALL = ("-i", "x=B,32", "-d", "B=1:4", "-s", "eager")


def _report(r: subprocess.CompletedProcess, kind: str, code: int) -> dict:
    assert r.returncode == code, r.stdout[-2000:] + r.stderr[-2000:]
    data = json.loads(r.stdout)
    assert_contract(data, kind)
    assert data["schema_version"] == SCHEMA_VERSION
    return data


def test_measure_find_fix_and_their_stored_documents(tmp_path: Path) -> None:
    spec = str(tmp_path / "list_append.py") + ":Net"
    shutil.copy(SAMPLES / "list_append.py", tmp_path / "list_append.py")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run = str(tmp_path / "run")
    # One run directory for the three: find reuses measure's probes, fix find's.
    measured = _report(run_cli("measure", spec, *SMALL, "--json", "--run-dir", run), "measure", 1)
    assert set(measured["versions"]) >= {"torch", "onnx", "onnxruntime"}
    found = _report(run_cli("find", spec, *SMALL, "--json", "--run-dir", run), "find", 1)
    assert found["culprits"]
    fixed = _report(run_cli("fix", spec, *SMALL, "--json", "--run-dir", run), "fix", 0)
    assert fixed["fixes"] and fixed["patches"]
    documents = sorted((tmp_path / "run" / "runs").glob("*/report.json"))
    assert documents, "find and fix keep their document in the run directory"
    for doc in documents:
        assert_contract(json.loads(doc.read_text()))


def test_repair_merge_and_summary_json(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "list_append.py", tmp_path / "list_append.py")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.bisector]\nstages = ["eager"]\n\n[[tool.bisector.models]]\nspec = "list_append.py:Net"\n'
        'inputs = ["x=B,32"]\ndims = ["B=1:4"]\n'
    )
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    summary = _report(run_cli("repair", "--json", "--out", "out", cwd=tmp_path), "repair", 0)
    assert [m["status"] for m in summary["models"]] == ["fixed"]
    assert_contract(json.loads((tmp_path / "out" / "summary.json").read_text()), "repair")
    merged = _report(run_cli("merge", "out", "--out", "merged", "--json", cwd=tmp_path), "repair", 0)
    assert [m["status"] for m in merged["models"]] == ["fixed"]
    assert_contract(json.loads((tmp_path / "merged" / "summary.json").read_text()), "repair")
