"""`bisector repair` on a migration project of four models sharing one export script and one
serving script (tests/projects/catalog): the patches apply with git, the project's own scripts
still run, the features the models promise still work and stay bounded, and a second repair
finds every model clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.probe

PROJECT = Path(__file__).resolve().parents[1] / "projects" / "catalog"


def git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("catalog") / "catalog"
    shutil.copytree(PROJECT, root, ignore=shutil.ignore_patterns("__pycache__", "artifacts", ".bisector"))
    git("init", "-q", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-qm", "the project as the team has it", cwd=root)
    return root


@pytest.fixture(scope="module")
def first(project: Path) -> dict:
    r = run_cli("repair", "--json", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def by_model(summary: dict) -> dict:
    return {Path(m["spec"].split(":")[0]).stem: m for m in summary["models"]}


def test_first_repair_fixes_the_leaks_and_keeps_behaviour(project: Path, first: dict) -> None:
    models = by_model(first)
    assert {k: m["status"] for k, m in models.items()} == {
        "tagger": "fixed",
        "encoder": "fixed",
        "ranker": "clean",
        "heatmap": "fixed",
    }
    for name in ("tagger", "encoder"):
        (chosen,) = models[name]["kept"]
        assert chosen["removes_behaviour"] == "" and "keep only the last" in chosen["summary"], chosen
    (warm,) = models["heatmap"]["kept"]
    # Chosen by the manifest's prefer: its trade-off is shown, not hidden.
    assert (
        "warm" in warm["summary"]
        and warm["upfront_bytes"] > 5e6
        and warm["steady_after_bytes"]
        and warm["steady_before_bytes"]
    )
    table = (project / ".bisector" / "repair" / "summary.md").read_text()
    assert "`proj` (eager leak, hook registered at models/encoder.py:27)" in table  # not "(its own code)"
    assert "upfront +" in table and "eager leak, inference clean" in table and "| no patch |" in table
    for m in models.values():
        assert m["check"] in ("passed", "no patch"), m
    patches = sorted((project / ".bisector" / "repair" / "patches").glob("*.patch"))
    assert [p.name for p in patches] == ["models__encoder.py.patch", "models__tagger.py.patch", "serve__serve.py.patch"]
    assert all(p.stat().st_size > 0 and "\nindex " in p.read_text() for p in patches)
    assert not (project / ".bisector" / "repair" / "runs" / "runs").exists()
    assert not git(
        "status", "--porcelain", "--untracked-files=no", cwd=project
    ).stdout  # nothing written without --apply


def test_a_partly_applied_project_keeps_the_other_models_patches(project: Path, first: dict) -> None:
    patches = project / ".bisector" / "repair" / "patches"
    git("apply", str(patches / "models__tagger.py.patch"), cwd=project)
    r = run_cli("repair", "--json", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    models = by_model(json.loads(r.stdout))
    assert {k: m["status"] for k, m in models.items()} == {
        "tagger": "clean",
        "encoder": "fixed",
        "ranker": "clean",
        "heatmap": "fixed",
    }
    assert models["encoder"]["patches"] == ["models__encoder.py.patch"] and models["heatmap"]["patches"] == [
        "serve__serve.py.patch"
    ]
    assert sorted(p.name for p in patches.glob("*.patch")) == ["models__encoder.py.patch", "serve__serve.py.patch"]
    assert all(p.stat().st_size > 0 for p in patches.glob("*.patch"))


def test_patches_apply_scripts_run_features_work_and_second_repair_is_clean(project: Path, first: dict) -> None:
    for p in sorted((project / ".bisector" / "repair" / "patches").glob("*.patch")):
        git("apply", "--3way", str(p), cwd=project)
    serve = (project / "serve" / "serve.py").read_text()
    # Only the heatmap's session gets the warm-up, built from the session's own inputs.
    assert "'heatmap': {" in serve and "'tagger'" not in serve and "'encoder'" not in serve
    assert "import onnxruntime\n" not in serve and "ort.RunOptions()" in serve
    for script in ("export/export_all.py", "serve/serve.py"):
        r = subprocess.run([sys.executable, script], cwd=project, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, script + r.stderr
    features = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import torch\n"
                "from models.tagger import Tagger\n"
                "from models import encoder\n"
                "t = Tagger()\n"
                "for _ in range(50): t(torch.randn(2, 3, 16, 16))\n"
                "stats = t.pop_stats()\n"
                "assert 1 <= len(stats) <= 8 and stats[0].shape == (8,), len(stats)\n"
                "assert t.pop_stats() == []\n"
                "t(torch.randn(1, 3, 16, 16)); assert len(t.pop_stats()) == 1\n"
                "e = encoder.QueryEncoder()\n"
                "for _ in range(50): e(torch.randint(0, 500, (2, 6)))\n"
                "recent = encoder.recent_embeddings()\n"
                "assert 1 <= len(recent) <= 8 and recent[-1].shape == (2, 16), len(recent)\n"
                "print('ok')\n"
            ),
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert features.returncode == 0 and "ok" in features.stdout, features.stderr
    again = run_cli("repair", "--json", cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    models = by_model(json.loads(again.stdout))
    assert {k: m["status"] for k, m in models.items()} == dict.fromkeys(
        ("tagger", "encoder", "ranker", "heatmap"), "clean"
    ), json.dumps({k: m for k, m in models.items() if m["status"] != "clean"}, indent=1)
    assert not list((project / ".bisector" / "repair" / "patches").glob("*.patch"))
