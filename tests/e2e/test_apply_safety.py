"""--apply never writes outside the project, nor over a read-only file without --force, and says
so before any probe runs (issue 12, items 1 and 7). The CLI cases run the real command."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bisector.common.errors import UserError
from bisector.patching.apply import apply, project_root
from bisector.patching.diff import Patch
from tests.conftest import SAMPLES, run_cli

FIX = ("--input", "x=B,32", "--dim", "B=1:2", "--stage", "eager", "--apply")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    p = tmp_path / "p"
    (p / "models").mkdir(parents=True)
    (p / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\n')
    return p


def _refused_up_front(r, started: float, *texts: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    for text in texts:
        assert text in r.stderr, r.stderr
    # Refused before analysis: no probe ran (a probe alone costs seconds) and no run dir was made.
    assert time.monotonic() - started < 20


def test_a_symlinked_model_file_pointing_outside_is_not_written(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    real = outside / "real.py"
    original = (SAMPLES / "list_append.py").read_text()
    real.write_text(original)
    (project / "models" / "net.py").symlink_to(real)
    started = time.monotonic()
    r = run_cli("fix", "models/net.py:Net", *FIX, cwd=project)
    _refused_up_front(r, started, "outside the project root", str(project), str(real), "nothing was written")
    assert real.read_text() == original
    assert not (project / ".bisector").exists()


def test_a_symlinked_folder_pointing_outside_is_not_written(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "shared_models"
    outside.mkdir()
    original = (SAMPLES / "list_append.py").read_text()
    (outside / "net.py").write_text(original)
    (project / "models").rmdir()
    (project / "models").symlink_to(outside, target_is_directory=True)
    started = time.monotonic()
    r = run_cli("fix", "models/net.py:Net", *FIX, cwd=project)
    _refused_up_front(r, started, "outside the project root")
    assert (outside / "net.py").read_text() == original


def test_an_export_script_outside_the_project_is_refused_before_probing(project: Path, tmp_path: Path) -> None:
    (project / "models" / "net.py").write_text((SAMPLES / "list_append.py").read_text())
    outside = tmp_path / "export.py"
    outside.write_text("import torch\n")
    started = time.monotonic()
    r = run_cli("fix", "models/net.py:Net", *FIX, "--export-script", str(outside), cwd=project)
    _refused_up_front(r, started, "--export-script", "outside the project root")
    assert not (project / ".bisector").exists()


def test_a_read_only_model_file_is_refused_unless_forced(project: Path) -> None:
    model = project / "models" / "net.py"
    original = (SAMPLES / "list_append.py").read_text()
    model.write_text(original)
    model.chmod(0o444)
    started = time.monotonic()
    r = run_cli("fix", "models/net.py:Net", *FIX, cwd=project)
    _refused_up_front(r, started, "read-only", "--force")
    assert model.read_text() == original and not (model.stat().st_mode & stat.S_IWUSR)


# -- the write guard itself, for what only shows at write time ----------------------------------


def test_the_project_is_decided_from_the_path_as_given(project: Path, tmp_path: Path) -> None:
    real = tmp_path / "real.py"
    real.write_text("x = 1\n")
    (project / "models" / "net.py").symlink_to(real)
    assert project_root(project / "models" / "net.py") == project


def test_apply_refuses_a_new_file_in_a_folder_linked_outside(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "out"
    outside.mkdir()
    (project / "gen").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UserError, match="through a symlink"):
        apply([Patch(str(project / "gen" / "export_onnx.py"), None, "print(1)\n", "new", str(project))], project)
    assert not (outside / "export_onnx.py").exists()


def test_apply_refuses_backups_that_a_link_would_carry_outside(project: Path, tmp_path: Path) -> None:
    target = project / "net.py"
    target.write_text("a\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (project / ".bisector").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UserError, match="outside the project root"):
        apply([Patch(str(target), "a\n", "b\n", "s", str(project))], project)
    assert target.read_text() == "a\n" and not any(elsewhere.rglob("*.py"))


def test_apply_replaces_a_read_only_file_only_with_force(project: Path) -> None:
    target = project / "net.py"
    target.write_text("a\n")
    target.chmod(0o444)
    patch = Patch(str(target), "a\n", "b\n", "s", str(project))
    with pytest.raises(UserError, match="read-only"):
        apply([patch], project)
    assert target.read_text() == "a\n"
    assert apply([patch], project, force=True) == ["net.py"]
    assert target.read_text() == "b\n"
    os.chmod(target, 0o644)


# -- a Windows-edited model: its line endings and BOM survive --apply (issue 19, item 6) --------


# The BOM+CRLF case covers both by default (a full find and fix each, ~17 s); plain CRLF (no BOM
# added) is in tests/unit/test_patch.py, and end to end here under `make test-all`.
@pytest.mark.probe
@pytest.mark.parametrize(
    "bom", [pytest.param(b"", id="crlf", marks=pytest.mark.slow), pytest.param(b"\xef\xbb\xbf", id="bom-crlf")]
)
def test_apply_and_the_printed_diff_keep_crlf_and_a_bom(project: Path, tmp_path: Path, bom: bytes) -> None:
    original = bom + (SAMPLES / "list_append.py").read_bytes().replace(b"\n", b"\r\n")
    model = project / "models" / "net.py"
    model.write_bytes(original)
    fresh = tmp_path / "fresh"
    (fresh / "models").mkdir(parents=True)
    (fresh / "models" / "net.py").write_bytes(original)

    args = ("fix", "models/net.py:Net", "-i", "x=B,32", "-s", "eager", "--fixer", "append-only", "--diff", "--apply")
    r = subprocess.run(
        [sys.executable, "-m", "bisector", *args, "--run-dir", str(tmp_path / "run")],
        cwd=project,
        capture_output=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    written = model.read_bytes()
    assert written != original and written.startswith(bom + b'"""A list appended to')
    body = written[len(bom) :]
    assert body.count(b"\n") == body.count(b"\r\n")  # every line, the added one too, ends with CRLF
    # every original line is there, unchanged and in order: the edit only added lines
    it = iter(written.splitlines(keepends=True))
    assert all(any(line == w for w in it) for line in original.splitlines(keepends=True))

    # The printed diff (on stdout as bytes, "\r" kept) applies to a fresh copy and gives the same file.
    out = r.stdout
    diff = out[out.index(b"diff --git ") : out.index(b"\napplied: ") + 1]
    assert b"+        del self.history[:-4]" in diff and b"\r\n" in diff
    added = [line for line in diff.splitlines() if line.startswith(b"+") and not line.startswith(b"+++")]
    assert len(written.splitlines()) == len(original.splitlines()) + len(added)  # nothing else changed
    (fresh / "p.diff").write_bytes(diff)
    subprocess.run(["git", "init", "-q"], cwd=fresh, check=True)
    for cmd in (["git", "apply", "--check", "p.diff"], ["patch", "--dry-run", "-p1", "-i", "p.diff"]):
        done = subprocess.run(cmd, cwd=fresh, capture_output=True, text=True)
        assert done.returncode == 0, f"{cmd[0]}: {done.stdout}{done.stderr}"
    subprocess.run(["git", "apply", "p.diff"], cwd=fresh, check=True)
    assert (fresh / "models" / "net.py").read_bytes() == written
    (backup,) = (project / ".bisector" / "backups").glob("*/models/net.py")
    assert backup.read_bytes() == original
