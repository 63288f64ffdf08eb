"""Folders a command writes into are checked before any probe runs (issue 19, item 5): a file given
as a folder, a folder under a file, one that cannot be written, and a `.bisector` linked out of the
project with --apply. Each used to be found only after measuring (exit 3, or for --apply a refusal
once the run's data had been written through the link)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from bisector.common.errors import UserError
from bisector.store.outputs import check_output_dir
from tests.conftest import FIXTURES, run_cli


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "p"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    shutil.copyfile(FIXTURES / "crashers.py", project / "m.py")
    return project


def _refused_at_once(r, started: float, *texts: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for text in texts:
        assert text in lines[0], lines[0]
    # No probe ran: a probe alone takes seconds (torch's import).
    assert time.monotonic() - started < 20


@pytest.mark.parametrize(
    "command, flag, value",
    [
        ("find", "--report", "afile"),
        ("measure", "--report", "afile/sub"),
        ("find", "--bundle", "afile"),
        ("find", "--run-dir", "afile"),
        ("measure", "--run-dir", "afile/runs"),
        # A folder that cannot be made, even by root (os.access would say yes to root here).
        ("find", "--run-dir", "/proc/self/bisector-run"),
    ],
)
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_probe(
    tmp_path: Path, command: str, flag: str, value: str
) -> None:
    project = _project(tmp_path)
    (project / "afile").write_text("not a folder\n")
    started = time.monotonic()
    r = run_cli(command, "m.py:Fine", "--input", "x=B,8", "--stage", "eager", flag, value, cwd=project)
    _refused_at_once(r, started, flag, value)
    assert not (project / ".bisector").exists()  # nothing was measured, nothing kept


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_a_read_only_working_folder_is_refused_before_any_probe(tmp_path: Path) -> None:
    project = _project(tmp_path)
    project.chmod(0o555)
    try:
        started = time.monotonic()
        r = run_cli("find", "m.py:Fine", "--input", "x=B,8", "--stage", "eager", cwd=project)
        _refused_at_once(r, started, "--run-dir", ".bisector", "Permission denied")
    finally:
        project.chmod(0o755)


def test_a_bisector_folder_linked_out_of_the_project_is_refused_before_apply_measures(tmp_path: Path) -> None:
    project = _project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (project / ".bisector").symlink_to(elsewhere)
    started = time.monotonic()
    r = run_cli("fix", "m.py:Fine", "--input", "x=B,8", "--stage", "eager", "--apply", cwd=project)
    _refused_at_once(r, started, "outside the project root", "through a symlink")
    assert list(elsewhere.iterdir()) == []  # nothing written through the link


@pytest.mark.parametrize("args", [("report", ".", "--out", "afile"), ("merge", "x", "--out", "afile/sub")])
def test_report_and_merge_check_their_out_first(tmp_path: Path, args: tuple[str, ...]) -> None:
    (tmp_path / "afile").write_text("x")
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2 and "--out" in r.stderr and "not a folder" in r.stderr, r.stderr


def test_the_check_leaves_nothing_behind(tmp_path: Path) -> None:
    check_output_dir(tmp_path / "new" / "deeper", "--report")
    assert list(tmp_path.iterdir()) == []  # not even the folder it checked for
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match="link to nothing"):
        check_output_dir(tmp_path / "dangling" / "x", "--out")
