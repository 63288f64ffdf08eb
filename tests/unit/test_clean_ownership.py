"""`bisector clean --remove` and every other deleting path remove only what bisector can prove it
wrote (issue 19, item 1): its known layout under a folder it marked when it created it. A project
that --run-dir, BISECTOR_RUN_DIR, BISECTOR_CACHE or repair's --out points at keeps every file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bisector.common.errors import UserError
from bisector.common.marks import CACHE, MARK, REPAIR_OUT, RUN_DIR, RUN_DIR_GITIGNORE, mark, owned
from bisector.repairs.compose import write_patches
from bisector.repairs.run import claim_output
from bisector.store.clean import CAPTURE, FOREIGN, RUN, clean, entries, evict_captures, remove

RUN_NAME = "net-Net-" + "0123456789abcdef"  # as lab.run_key names a run


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _project(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "m.py").write_text("x = 1\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    (root / "runs").mkdir()  # a user's folder that happens to share a name with bisector's layout
    (root / "runs" / "2024").mkdir()
    (root / "runs" / "2024" / "log.txt").write_text("mine\n")
    (root / "captures").mkdir()
    (root / "captures" / "cam1").mkdir()
    (root / "captures" / "cam1" / "frame.png").write_bytes(b"\x89PNG")
    return root


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bisector", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **env},
        timeout=120,
    )


def test_clean_remove_with_run_dir_pointing_at_a_project_deletes_nothing(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    before = _tree(project)
    r = _cli("clean", "--run-dir", str(project), "--remove", cwd=tmp_path, env={"BISECTOR_CACHE": str(tmp_path / "c")})
    assert r.returncode == 0, r.stderr
    assert _tree(project) == before
    assert "not bisector's" in r.stdout and "removed 0 B" in r.stdout


def test_bisector_run_dir_dot_does_not_empty_the_current_folder(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    before = _tree(project)
    r = _cli("clean", "--remove", "--backups", cwd=project, env={"BISECTOR_RUN_DIR": ".", "BISECTOR_CACHE": "."})
    assert r.returncode == 0, r.stderr
    assert _tree(project) == before


def test_a_cache_folder_that_is_a_project_keeps_its_files(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    (project / "controls").mkdir()
    (project / "controls" / "notes.json").write_text("{}")  # not a control file's name
    before = _tree(project)
    done = clean(None, project, delete=True)
    assert {o.entry.kind for o in done} == {FOREIGN} and not any(o.removed for o in done)
    assert _tree(project) == before


def test_a_marked_run_directory_loses_only_its_own_layout(tmp_path: Path) -> None:
    run = tmp_path / ".bisector"
    mark(run, RUN_DIR)
    (run / "runs" / RUN_NAME).mkdir(parents=True)
    (run / "runs" / RUN_NAME / "r.json").write_text("{}")
    (run / "runs" / "my-experiments").mkdir()  # a folder, but not under a name bisector gives
    (run / "runs" / "stray.txt").write_text("a file where runs are folders")
    (run / "notes.md").write_text("the user's notes, put here by hand")
    (run / "captures").write_text("a file where a folder belongs")
    done = clean(run, None, delete=True)
    assert [o.entry.path.name for o in done if o.removed] == [RUN_NAME]
    assert (
        (run / "runs" / "my-experiments").is_dir()
        and (run / "runs" / "stray.txt").exists()
        and (run / "notes.md").exists()
        and (run / "captures").is_file()
    )
    assert (run / MARK).exists() and (run / ".gitignore").exists()


def test_the_mark_is_written_only_into_new_or_empty_folders(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    mark(project, RUN_DIR)
    assert not owned(project, RUN_DIR) and not (project / MARK).exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    mark(empty, RUN_DIR)
    assert owned(empty, RUN_DIR) and not owned(empty, CACHE)  # a run directory is no cache
    assert (empty / ".gitignore").read_text() == RUN_DIR_GITIGNORE


def test_a_run_directory_from_before_the_mark_is_known_by_its_gitignore(tmp_path: Path) -> None:
    run = tmp_path / ".bisector"
    (run / "runs" / RUN_NAME).mkdir(parents=True)
    (run / ".gitignore").write_text(RUN_DIR_GITIGNORE)
    assert [e.kind for e in entries(run, None)] == [RUN]
    (run / ".gitignore").write_text("*\n")  # a user's own .gitignore proves nothing
    assert {e.kind for e in entries(run, None)} == {FOREIGN}


def test_a_symlinked_mark_or_run_directory_proves_nothing(tmp_path: Path) -> None:
    real = tmp_path / "real"
    mark(real, RUN_DIR)
    (real / "runs" / RUN_NAME).mkdir(parents=True)
    fake = _project(tmp_path / "fake")
    (fake / MARK).symlink_to(real / MARK)
    assert not owned(fake, RUN_DIR)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert entries(link, None) == []  # not followed: nothing listed, nothing removed
    assert (real / "runs" / RUN_NAME).exists()


def test_remove_refuses_a_foreign_entry_even_when_asked(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    (foreign,) = [e for e in entries(project, None) if e.path.name == "src"]
    assert remove([foreign]) == [(foreign, "not bisector's")]
    assert (project / "src" / "m.py").exists()


def test_eviction_never_touches_captures_of_an_unmarked_folder(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    in_use = project / "captures" / "mine"
    in_use.mkdir()
    before = _tree(project)
    assert evict_captures(in_use, cap=0, now=10**10) == []
    assert _tree(project) == before


def test_eviction_in_a_marked_folder_skips_what_is_not_a_capture_folder(tmp_path: Path) -> None:
    mark(tmp_path, RUN_DIR)
    caps = tmp_path / "captures"
    old = caps / f"net-Net-{'0' * 12}-{'1' * 16}"
    old.mkdir(parents=True)
    (old / "x.pt").write_bytes(b"x" * 100)
    (caps / "loose.bin").write_bytes(b"x" * 100)  # not bisector's shape: a file, not a capture folder
    os.utime(old, (1, 1))
    os.utime(caps / "loose.bin", (1, 1))
    in_use = caps / f"net-Net-{'2' * 12}-{'3' * 16}"
    in_use.mkdir()
    removed = evict_captures(in_use, cap=0, now=10**10)
    assert [e.path.name for e in removed] == [old.name] and all(e.kind == CAPTURE for e in removed)
    assert (caps / "loose.bin").exists()


def test_repair_refuses_an_out_folder_holding_files_it_did_not_write(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    (project / "patches").mkdir()
    (project / "patches" / "fix-build.patch").write_text("the user's own patch\n")
    with pytest.raises(UserError, match="holds files bisector did not write"):
        claim_output(project)
    assert claim_output(tmp_path / "new") == tmp_path / "new" and owned(tmp_path / "new", REPAIR_OUT)
    old = tmp_path / "old-output"  # a repair output from before the mark: its stamped summary
    old.mkdir()
    (old / "summary.json").write_text(json.dumps({"report_kind": "repair"}))
    assert claim_output(old) == old


def test_write_patches_replaces_only_its_own_old_patches(tmp_path: Path) -> None:
    out = claim_output(tmp_path / "out")
    (out / "patches").mkdir()
    (out / "patches" / "net.py.patch").write_text("an older run's patch\n")
    write_patches([], {}, {}, out)
    assert not (out / "patches" / "net.py.patch").exists()


# -- any run directory with foreign files in it: every foreign file survives --------------------------

_names = st.text(alphabet="abcdefghij-_.", min_size=1, max_size=8).filter(lambda n: n not in (".", ".."))
_layout_names = st.sampled_from(["runs", "captures", "backups", "repair", ".gitignore", MARK, "controls"])
_paths = st.lists(st.one_of(_layout_names, _names), min_size=1, max_size=4)
_OURS = {"runs": RUN_NAME, "captures": f"m-Net-{'0' * 12}-{'1' * 16}", "backups": "20260101-120000"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    foreign=st.lists(_paths, min_size=1, max_size=8),
    bisectors=st.lists(st.sampled_from(list(_OURS.items())), max_size=3, unique=True),
    marked=st.booleans(),
    as_cache=st.booleans(),
)
def test_every_foreign_file_survives_clean_remove(
    tmp_path_factory: pytest.TempPathFactory,
    foreign: list[list[str]],
    bisectors: list[tuple[str, str]],
    marked: bool,
    as_cache: bool,
) -> None:
    root = tmp_path_factory.mktemp("run")
    if marked:
        mark(root, CACHE if as_cache else RUN_DIR)
    ours: set[Path] = set()
    for folder, name in bisectors if marked and not as_cache else []:
        entry = root / folder / name
        entry.mkdir(parents=True, exist_ok=True)
        (entry / "data.json").write_text("{}")
        ours.add(entry)
    planted: dict[Path, bytes] = {}
    for parts in foreign:
        path = root.joinpath(*parts)
        if any(path == p or p in path.parents for p in ours) or path.exists() or path.parent.is_file():
            continue  # a file inside a folder bisector made is bisector's to remove, with the folder
        if any(a.is_file() for a in path.parents if root in a.parents):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        data = f"user data {'/'.join(parts)}".encode()
        path.write_bytes(data)
        planted[path] = data
    clean(None if as_cache else root, root if as_cache else None, delete=True, backups=True)
    for path, data in planted.items():
        if path.name in (MARK, ".gitignore") and path.parent == root and marked:
            continue  # the mark and the run directory's .gitignore are bisector's own
        assert path.read_bytes() == data, path
    for entry in ours:
        assert not entry.exists(), entry


def test_the_temp_sweep_removes_only_folders_that_name_a_dead_owner(tmp_path: Path) -> None:
    from bisector.probe.workdirs import OWNER_FILE, sweep_stale_workdirs

    anyones = tmp_path / "bisector-notes"  # a name alone proves nothing: the temp folder is shared
    anyones.mkdir()
    (anyones / "todo.txt").write_text("mine\n")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / OWNER_FILE).write_text("999999999 1\n")  # a dead owner, but reached through a link
    (tmp_path / "bisector-link").symlink_to(target, target_is_directory=True)
    dead = tmp_path / "bisector-dead"
    dead.mkdir()
    (dead / OWNER_FILE).write_text("999999999 1\n")
    assert sweep_stale_workdirs(tmp_path) == [dead]
    assert (anyones / "todo.txt").exists() and (target / OWNER_FILE).exists()


def test_a_repair_folder_bisector_did_not_mark_survives_clean_remove(tmp_path: Path) -> None:
    """Hypothesis found it: a user's `repair/` in a marked run directory went with `clean --remove`."""
    mark(tmp_path, RUN_DIR)
    theirs = tmp_path / "repair" / "notes.txt"
    theirs.parent.mkdir()
    theirs.write_text("mine")
    clean(tmp_path, None, delete=True, backups=True)
    assert theirs.read_text() == "mine"
    ours = tmp_path / "repair"
    theirs.unlink()  # an empty folder is what repair's claim_output marks and writes into
    mark(ours, REPAIR_OUT)
    (ours / "summary.json").write_text("{}")
    clean(tmp_path, None, delete=True, backups=True)
    assert not ours.exists()
