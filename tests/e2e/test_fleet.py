"""Many machines: `repair --executor ray` writes what the local executor writes, a task that dies
is one model's error after one retry, and `--shard I/N` outputs merged equal one unsharded run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, run_cli

pytestmark = pytest.mark.probe

# Three quick samples, eager stage only: two leaks with a kept fix each, one clean model.
MODELS = {
    "list_append": 'inputs = ["x=B,32"]',
    "clean_cnn": 'inputs = ["x=B,3,H,W"]\ndims = ["B=1:4", "H=8:32", "W=8:32"]',
    "forward_hook": 'inputs = ["x=B,3,H,W"]\ndims = ["B=1:4", "H=8:32", "W=8:32"]',
}

# Prepended to a copy of list_append: while the marker file exists, whichever process imports the
# model (a probe forked under the Ray task) SIGKILLs the Ray worker running its task - a worker
# lost mid-run, as when a node goes - and notes the worker's pid.
KILLER = """
import os as _os, signal as _signal
from pathlib import Path as _Path
_MARK = _Path(__file__).with_name("KILL_RAY_WORKER")
if _MARK.exists():
    import psutil as _psutil
    for _p in [_psutil.Process(), *_psutil.Process().parents()]:
        try:
            _cmd = _p.cmdline()
        except _psutil.Error:
            continue
        if _cmd and _cmd[0].startswith("ray::"):
            with open(_MARK, "a") as _f:
                _f.write(f"{_p.pid}\\n")
            try:
                _os.kill(_p.pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
"""


def make_project(root: Path, models: dict[str, str], killer: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, options in models.items():
        shutil.copy(SAMPLES / f"{name}.py", root / f"{name}.py")
        entries.append(f'[[tool.bisector.models]]\nspec = "{name}.py:Net"\n{options}\n')
    if killer:
        source = (SAMPLES / "list_append.py").read_text()
        doc_end = source.index('"""', 3) + 3  # after the docstring, so it stays the module's
        (root / f"{killer}.py").write_text(source[:doc_end] + "\n" + KILLER + source[doc_end:])
        entries.append(f'[[tool.bisector.models]]\nspec = "{killer}.py:Net"\n{MODELS["list_append"]}\n')
    (root / "pyproject.toml").write_text('[tool.bisector]\nstages = ["eager"]\n\n' + "\n".join(entries))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


# Figures measured from memory differ between any two runs, on one executor too (a few KB of
# allocator noise, one probe more or less when a verdict needs a rerun); everything the user acts
# on - statuses, verdicts, culprits, chosen fixes, the patches and check states - must not.
_FIGURE = re.compile(r"[+-]?\d+(\.\d+)? ?(B|KB|MB|GB)\b")
# timings: where each run spent its time (phases run side by side in threads: their order varies too).
_MEASURED = {"wall_s", "probes", "out", "resumed", "confidence", "timings"}


def _mask(value):
    if isinstance(value, dict):
        return {
            k: ("*" if k in _MEASURED or (isinstance(v, float) and k != "counts") else _mask(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, str):
        return _FIGURE.sub("N", value)
    return value


def outputs(out: Path) -> dict[str, object]:
    """What a run leaves for the user, figures masked: summary.json (with paths relative to
    <out>), summary.md, and every patch byte for byte."""
    summary = json.loads((out / "summary.json").read_text())
    for m in summary["models"]:
        if m.get("patch"):
            m["patch"] = "/".join(Path(m["patch"]).parts[-2:])  # patches/<file>.patch, wherever <out> is
    files = {p.name: p.read_bytes() for p in sorted((out / "patches").glob("*.patch"))}
    return {
        "summary.json": _mask(summary),
        "summary.md": _FIGURE.sub("N", (out / "summary.md").read_text()),
        "patches": files,
        "all.patch": (out / "all.patch").read_bytes() if (out / "all.patch").exists() else b"",
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("fleet") / "project", MODELS)


@pytest.fixture(scope="module")
def local_run(project: Path) -> Path:
    r = run_cli("repair", "--out", "local", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[3/3 done, 0 running, 0 queued]" in r.stderr  # progress as each result arrives
    return project / "local"


def test_local_run_repairs_the_three_samples(local_run: Path) -> None:
    summary = json.loads((local_run / "summary.json").read_text())
    assert {Path(m["spec"]).stem.split(".")[0]: m["status"] for m in summary["models"]} == {
        "list_append": "fixed",
        "clean_cnn": "clean",
        "forward_hook": "fixed",
    }
    assert sorted(p.name for p in (local_run / "patches").iterdir()) == [
        "forward_hook.py.patch",
        "list_append.py.patch",
    ]


def test_shards_merged_equal_the_unsharded_run(project: Path, local_run: Path) -> None:
    # Both shards at once, as two CI jobs would run them.
    jobs = {
        part: subprocess.Popen(
            [sys.executable, "-m", "bisector", "repair", "--shard", part, "--out", f"shard{part[0]}", "--json"],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in ("1/2", "2/2")
    }
    names = {}
    for part, job in jobs.items():
        stdout, stderr = job.communicate(timeout=600)
        assert job.returncode == 0, stdout + stderr
        names[part] = [m["name"] for m in json.loads(stdout)["models"]]
    # The split hashes the names as written, so it is the same on every machine, run and version:
    # a CI matrix that changed it between jobs would skip or repeat models.
    assert names == {"1/2": ["list_append-Net", "forward_hook-Net"], "2/2": ["clean_cnn-Net"]}
    merged = run_cli("merge", "shard1", "shard2", "--out", "merged", cwd=project)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert outputs(project / "merged") == outputs(local_run)
    # the merged output is a whole repair output: a repair over it resumes every model
    resumed = run_cli("repair", "--out", "merged", cwd=project)
    assert "(3 resumed)" in resumed.stdout


def test_merge_refuses_a_missing_shard(project: Path, local_run: Path) -> None:
    shutil.copytree(local_run, project / "partial", dirs_exist_ok=True)
    (project / "partial" / "clean_cnn-Net.json").unlink()
    r = run_cli("merge", "partial", "--out", "merged-partial", cwd=project)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no result for clean_cnn.py:Net" in r.stderr


@pytest.mark.parametrize(
    "args,text",
    [
        (["--shard", "3/2"], "--shard 3/2: expected I/N"),
        (["--shard", "x"], "--shard x: expected I/N"),
        (["--executor", "dask"], "--executor dask: expected local or ray"),
        (["--address", "auto"], "use it with --executor ray"),
    ],
)
def test_bad_fleet_options_are_one_line_errors(project: Path, args: list[str], text: str) -> None:
    r = run_cli("repair", *args, "--out", "never", cwd=project)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert text in r.stderr and len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1
    assert not (project / "never").exists()


def test_executor_ray_without_ray_says_how_to_install(project: Path) -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
        "from bisector.cli import main; main(['repair', '--executor', 'ray', '--out', 'never'])"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "pip install 'bisector[ray]'" in r.stderr


def test_cli_import_pulls_in_neither_ray_nor_torch() -> None:
    code = "import sys, bisector.cli\nprint(sorted(m for m in ('ray', 'torch') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


# -- with Ray ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'bisector[ray]' (make venv installs it)")
    # A private two-CPU Ray on the loopback interface: no dashboard, nothing listening outside.
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()
    from bisector.repairs.ray import sweep_after_shutdown

    sweep_after_shutdown()  # the workers' folders: the suite fails on any bisector-* left behind


def test_ray_run_writes_what_the_local_executor_writes(ray_local, project: Path, local_run: Path) -> None:
    from bisector import api

    seen = []

    def progress(result, state) -> None:
        # the summary on disk already holds every result so far, and names the models still out
        on_disk = json.loads((project / "ray" / "summary.json").read_text())
        seen.append((state.done, state.running + state.queued, len(on_disk["models"]), len(on_disk.get("pending", []))))

    summary = api.repair(
        config=str(project / "pyproject.toml"), out=str(project / "ray"), executor="ray", progress=progress
    )
    assert summary.exit_code == 0
    assert outputs(project / "ray") == outputs(local_run)
    assert seen == [(1, 2, 1, 2), (2, 1, 2, 1), (3, 0, 3, 0)]


def test_a_killed_task_is_retried_once_then_one_models_error(ray_local, tmp_path: Path) -> None:
    from bisector import api

    # One healthy model beside the doomed one is enough to see that only the lost task fails;
    # a fix through Ray is test_ray_run_writes_what_the_local_executor_writes's.
    root = make_project(tmp_path / "project", {"clean_cnn": MODELS["clean_cnn"]}, killer="doomed")
    mark = root / "KILL_RAY_WORKER"
    mark.write_text("")
    first = api.repair(config=str(root / "pyproject.toml"), out=str(root / "out"), executor="ray")
    status = {r.name: r for r in first.results}
    assert status["doomed-Net"].status == "error" and "retried 1 time" in status["doomed-Net"].error
    assert len(set(mark.read_text().split())) == 2  # two workers killed: the first try and its one retry
    assert status["clean_cnn-Net"].status == "clean"
    assert first.exit_code == 2
    on_disk = json.loads((root / "out" / "summary.json").read_text())
    assert [m["status"] for m in on_disk["models"]] == ["clean", "error"]

    mark.unlink()  # the node is back: the second run repairs only the model that was lost
    second = api.repair(config=str(root / "pyproject.toml"), out=str(root / "out"), executor="ray")
    again = {r.name: r for r in second.results}
    assert again["clean_cnn-Net"].resumed
    assert not again["doomed-Net"].resumed and again["doomed-Net"].status == "fixed"
    assert second.exit_code == 0
