"""What bisector keeps on disk (issue 13, item 7): `bisector clean` lists the control cache, runs,
captures, repair output and backups with sizes and ages, removes them past --keep-days/--max-size
(backups only when asked), and captures are evicted oldest first past a cap after each new one."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from bisector.common.marks import CACHE, REPAIR_OUT, RUN_DIR, mark
from bisector.store.clean import (
    BACKUP,
    CAPTURE,
    CAPTURE_CAP_ENV,
    CONTROL_CACHE,
    DAY_S,
    DEFAULT_CAPTURE_CAP,
    REPAIR,
    RUN,
    capture_cap,
    claim_capture,
    clean,
    entries,
    evict_captures,
    measure_path,
    release_capture,
    select,
)
from tests.conftest import run_cli

NOW = 1_800_000_000.0
# Names as bisector gives them (lab.run_key, lab.capture_key): clean removes no folder named otherwise.
RUN_A, RUN_B = "net-Net-" + "a" * 16, "net-Net-" + "b" * 16
CAP_OLD, CAP_NEW = "net-Net-" + "0" * 12 + "-" + "1" * 16, "net-Net-" + "2" * 12 + "-" + "3" * 16


def _cap(name: str) -> str:
    return f"{name}-{'c' * 12}-{'d' * 16}"


def _put(folder: Path, size: int, age_days: float, name: str = "data.bin") -> Path:
    """A folder holding one file of size bytes, all last changed age_days before NOW."""
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / name
    f.write_bytes(b"x" * size)
    stamp = NOW - age_days * DAY_S
    os.utime(f, (stamp, stamp))
    os.utime(folder, (stamp, stamp))
    return folder


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    run, cache = tmp_path / ".bisector", tmp_path / "cache"
    mark(run, RUN_DIR)  # as bisector makes them: marked when created
    mark(cache, CACHE)
    _put(cache / "controls", 1000, 1, f"control-{'a' * 24}.json")
    _put(run / "runs" / RUN_A, 3000, 10)
    _put(run / "runs" / RUN_B, 2000, 2)
    _put(run / "captures" / CAP_OLD, 50_000, 30)
    _put(run / "captures" / CAP_NEW, 40_000, 0.5)
    mark(run / "repair", REPAIR_OUT)  # repair's claim_output marks the folder it writes into
    _put(run / "repair", 500, 5, "summary.json")
    _put(run / "backups" / "20250101-120000", 700, 60, "net.py")
    return run, cache


def _names(found) -> list[str]:
    return sorted(e.path.name for e in found)


def test_measure_path_counts_the_files_and_the_newest_change(tmp_path: Path) -> None:
    _put(tmp_path / "a" / "b", 10, 5)
    _put(tmp_path / "a", 20, 3, "other.bin")
    assert measure_path(tmp_path / "a") == (30, NOW - 3 * DAY_S)
    assert measure_path(tmp_path / "missing") == (0, 0.0)


def test_entries_list_each_run_capture_and_backup_with_size_and_age(places: tuple[Path, Path]) -> None:
    run, cache = places
    found = {(e.kind, e.path.name): e for e in entries(run, cache)}
    assert set(found) == {
        (CONTROL_CACHE, "controls"),
        (RUN, RUN_A),
        (RUN, RUN_B),
        (CAPTURE, CAP_OLD),
        (CAPTURE, CAP_NEW),
        (REPAIR, "repair"),
        (BACKUP, "20250101-120000"),
    }  # .gitignore is not listed: it keeps the run data out of git
    assert found[(CAPTURE, CAP_OLD)].size == 50_000
    assert found[(RUN, RUN_A)].age_days(NOW) == pytest.approx(10)


def test_no_places_no_entries(tmp_path: Path) -> None:
    assert entries(tmp_path / "none", tmp_path / "nothing") == []
    assert entries(None, None) == []


def test_without_caps_everything_but_backups_is_chosen(places: tuple[Path, Path]) -> None:
    found = entries(*places)
    assert BACKUP not in {e.kind for e in select(found, now=NOW)}
    assert len(select(found, now=NOW)) == len(found) - 1
    assert len(select(found, backups=True, now=NOW)) == len(found)


def test_keep_days_chooses_what_has_not_changed_for_longer(places: tuple[Path, Path]) -> None:
    found = entries(*places)
    assert _names(select(found, keep_days=7, now=NOW)) == sorted([RUN_A, CAP_OLD])
    with_backups = select(found, keep_days=7, backups=True, now=NOW)
    assert _names(with_backups) == sorted(["20250101-120000", RUN_A, CAP_OLD])


def test_max_size_removes_oldest_first_until_the_rest_fits(places: tuple[Path, Path]) -> None:
    found = entries(*places)
    # 96.5 KB without backups; the 30-day capture (50 KB) goes first, then the 10-day run (3 KB).
    assert _names(select(found, max_size=50_000, now=NOW)) == [CAP_OLD]
    assert _names(select(found, max_size=45_000, now=NOW)) == sorted([RUN_A, CAP_OLD])
    assert select(found, max_size=10**9, now=NOW) == []
    assert len(select(found, max_size=0, now=NOW)) == len(found) - 1  # backups still kept


def test_both_caps_together(places: tuple[Path, Path]) -> None:
    found = entries(*places)
    # keep-days 20 takes the old capture; then 3 KB + 2 KB + 40 KB + 1 KB + 0.5 KB = 46.5 KB must fit in 44 KB.
    assert _names(select(found, keep_days=20, max_size=44_000, now=NOW)) == sorted([RUN_A, CAP_OLD])


def test_clean_lists_without_removing_and_removes_when_asked(places: tuple[Path, Path]) -> None:
    run, cache = places
    listed = clean(run, cache, keep_days=7, now=NOW)
    assert all(e.path.exists() for e in entries(run, cache))
    assert sorted(o.entry.path.name for o in listed if o.selected) == sorted([RUN_A, CAP_OLD])
    assert not any(o.removed for o in listed)
    done = clean(run, cache, keep_days=7, delete=True, now=NOW)
    assert sorted(o.entry.path.name for o in done if o.removed) == sorted([RUN_A, CAP_OLD])
    assert not (run / "runs" / RUN_A).exists() and (run / "runs" / RUN_B).exists()
    assert (run / "backups" / "20250101-120000" / "net.py").exists() and (run / ".gitignore").exists()
    row = done[0].to_json(NOW)
    assert set(row) == {"kind", "path", "bytes", "age_days", "selected", "removed"}


def test_backups_go_only_when_asked_for(places: tuple[Path, Path]) -> None:
    run, cache = places
    clean(run, cache, delete=True, now=NOW)
    assert [p.name for p in (run / "backups").iterdir()] == ["20250101-120000"]
    assert not list((run / "captures").iterdir()) and not (cache / "controls").exists()
    clean(run, cache, delete=True, backups=True, now=NOW)
    assert not list((run / "backups").iterdir())


def test_eviction_removes_other_captures_oldest_first_past_the_cap(tmp_path: Path) -> None:
    mark(tmp_path, RUN_DIR)
    captures = tmp_path / "captures"
    for name, age in (("c-5d", 5), ("c-3d", 3), ("c-9d", 9), ("c-1d", 1)):
        _put(captures / _cap(name), 100, age)
    in_use = _put(captures / _cap("c-in-use"), 100, 20)  # old files, but the one this run needs now
    removed = evict_captures(in_use, cap=250, now=NOW + 7200)
    assert [e.path.name for e in removed] == [_cap("c-9d"), _cap("c-5d"), _cap("c-3d")]
    assert sorted(p.name for p in captures.iterdir()) == [_cap("c-1d"), _cap("c-in-use")]


def test_eviction_spares_the_capture_in_use_and_recent_ones(tmp_path: Path) -> None:
    mark(tmp_path, RUN_DIR)
    captures = tmp_path / "captures"
    now = time.time()
    in_use = _put(captures / _cap("mine"), 500, 0)
    other = captures / _cap("another-run")
    other.mkdir()
    (other / "x.pt").write_bytes(b"x" * 500)  # written a moment ago: maybe a run still going
    assert evict_captures(in_use, cap=100, now=now) == []
    assert in_use.exists() and other.exists()
    assert time.time() - in_use.stat().st_mtime < 60  # marked as used now


def test_eviction_does_nothing_under_the_cap(tmp_path: Path) -> None:
    mark(tmp_path, RUN_DIR)
    captures = tmp_path / "captures"
    old = _put(captures / _cap("old"), 100, 90)
    in_use = _put(captures / _cap("mine"), 100, 0)
    assert evict_captures(in_use, cap=1000, now=NOW) == []
    assert old.exists()


def test_the_capture_cap_comes_from_the_environment_then_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CAPTURE_CAP_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.py").write_text("")
    assert capture_cap(str(tmp_path / "net.py")) == DEFAULT_CAPTURE_CAP
    (tmp_path / "pyproject.toml").write_text('[tool.bisector]\ncapture_cap = "200MB"\n')
    assert capture_cap(str(tmp_path / "net.py")) == 200 * 1000**2
    monkeypatch.setenv(CAPTURE_CAP_ENV, "3GB")
    assert capture_cap(str(tmp_path / "net.py")) == 3 * 1000**3
    monkeypatch.setenv(CAPTURE_CAP_ENV, "lots")
    assert capture_cap(str(tmp_path / "net.py")) == DEFAULT_CAPTURE_CAP  # a typo never stops a find half way


def test_the_config_refuses_a_bad_capture_cap(tmp_path: Path) -> None:
    from bisector.common.errors import UserError
    from bisector.options.config import load_config

    (tmp_path / "pyproject.toml").write_text("[tool.bisector]\ncapture_cap = true\n")
    with pytest.raises(UserError, match="capture_cap: expected a size"):
        load_config(str(tmp_path / "x.py"))


def test_the_clean_command_lists_then_removes(places: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    run, cache = places
    monkeypatch.setenv("BISECTOR_CACHE", str(cache))
    r = run_cli("clean", "--run-dir", str(run))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    old = [ln for ln in lines if ln.endswith(CAP_OLD)]
    assert len(old) == 1 and old[0].startswith("capture") and "50.0 KB" in old[0] and "to go" in old[0], r.stdout
    assert any(ln.startswith("backup") and "kept" in ln for ln in lines), r.stdout
    assert lines[-1] == "7 entries, 97.2 KB; would remove 96.5 KB (rerun with --remove)"
    assert (run / "captures" / CAP_OLD).exists()
    r = run_cli("clean", "--run-dir", str(run), "--max-size", "45KB", "--remove", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["removed"] is True
    assert sorted(Path(e["path"]).name for e in data["entries"] if e["removed"]) == sorted([RUN_A, CAP_OLD])
    assert not (run / "captures" / CAP_OLD).exists() and (run / "captures" / CAP_NEW).exists()


def test_the_clean_command_refuses_bad_caps(tmp_path: Path) -> None:
    r = run_cli("clean", "--run-dir", str(tmp_path), "--max-size", "lots")
    assert r.returncode == 2 and "--max-size 'lots' is not a size" in r.stderr
    r = run_cli("clean", "--run-dir", str(tmp_path), "--keep-days", "-1")
    assert r.returncode == 2 and "--keep-days must be 0 or more" in r.stderr


def _dead_pid() -> int:
    """A process id no live process has: a child that has been waited for."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_capture_goes_when_its_run_is_done_unless_another_live_run_claims_it(tmp_path: Path) -> None:
    """Issue 25: captures are kept only while needed. The run that claimed one removes its inputs
    at its end (the module tree stays: a re-run needs it before any probe); a capture another live
    process also claims stays (only this process's claim goes)."""
    mark(tmp_path, RUN_DIR)
    mine = _put(tmp_path / "captures" / _cap("mine"), 500, 0)
    (mine / "tree.json").write_text("{}")
    claim_capture(mine)
    assert release_capture(mine) and [p.name for p in mine.iterdir()] == ["tree.json"]  # the inputs went
    shared = _put(tmp_path / "captures" / _cap("shared"), 500, 0)
    claim_capture(shared)
    (shared / f".in-use-{os.getppid()}").touch()  # the test runner's parent: alive
    assert not release_capture(shared) and shared.exists()
    assert not (shared / f".in-use-{os.getpid()}").exists()
    foreign = tmp_path / "captures" / "not-a-capture-name"
    foreign.mkdir()
    assert not release_capture(foreign) and foreign.exists()  # not a name bisector gives: never removed


def test_the_cap_holds_within_a_run_sparing_only_what_other_live_runs_claim(tmp_path: Path) -> None:
    """Issue 25: captures younger than an hour were all spared, so one run's 1.3 GB ones stayed
    past the 1 GB cap. A claimed capture is spared only while a live process other than this one
    claims it; unclaimed ones (from before claims) keep the hour's grace."""
    mark(tmp_path, RUN_DIR)
    captures = tmp_path / "captures"
    now = time.time()
    ours = _put(captures / _cap("this-run-earlier"), 500, 0)
    claim_capture(ours)  # this process: not spared
    gone = _put(captures / _cap("dead-run"), 500, 0)
    (gone / f".in-use-{_dead_pid()}").touch()
    live = _put(captures / _cap("live-run"), 500, 0)
    (live / f".in-use-{os.getppid()}").touch()
    legacy = _put(captures / _cap("unclaimed"), 500, 0)
    for folder in (ours, gone, live, legacy):
        os.utime(folder, (now - 60, now - 60))
        for f in folder.iterdir():
            os.utime(f, (now - 60, now - 60))
    in_use = _put(captures / _cap("in-use"), 500, 0)
    removed = evict_captures(in_use, cap=100, now=now)
    assert sorted(e.path.name for e in removed) == sorted([_cap("this-run-earlier"), _cap("dead-run")])
    assert live.exists() and legacy.exists() and in_use.exists()


def test_clean_remove_can_keep_the_control_cache(places: tuple[Path, Path]) -> None:
    run, cache = places
    done = clean(run, cache, delete=True, now=NOW, controls=False)
    kept = [o for o in done if o.entry.kind == CONTROL_CACHE]
    assert kept and not kept[0].selected and (cache / "controls").exists()
    assert not list((run / "captures").iterdir())


def test_a_run_ends_with_its_disk_use_when_over_100_mb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bisector.cli.probing import Output
    from bisector.cli.render import disk_note

    run = tmp_path / ".bisector"
    mark(run, RUN_DIR)
    _put(run / "runs" / RUN_A, 1000, 0)
    disk_note(str(run), Output())
    assert capsys.readouterr().err == ""  # small: nothing said
    with open(run / "runs" / RUN_A / "big.bin", "wb") as fh:
        fh.truncate(150 * 1000**2)  # sparse: counted by its size, written in no time
    disk_note(str(run), Output(quiet=True))
    assert capsys.readouterr().err == ""  # -q: the verdict line and errors only
    disk_note(str(run), Output())
    err = capsys.readouterr().err
    assert err.startswith(f"disk: {run} holds 150.0 MB") and "bisector clean" in err
