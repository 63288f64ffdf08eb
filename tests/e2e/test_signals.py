"""A probe never outlives bisector (issue 12, items 2 and 3): SIGTERM, SIGHUP and Ctrl-C end
every probe, in both probe modes, within a second or two, remove the temporary folders, and say
what state things are in. The real command, a real hanging probe, real signals. A signal at any
moment of the start exits 128+N (issue 19, item 4), and one the kernel hands to a worker thread
stops bisector too (issue 26); bench/signal_stress.py runs the long version."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.signal_stress import describe, run_once
from tests.conftest import FIXTURES
from tests.probe.test_process_tree import alive, gone_within

pytestmark = pytest.mark.probe
HANG = f"{FIXTURES / 'spawners.py'}:HangAndTell"


def start(tmp_path: Path, command: str, *extra: str) -> tuple[subprocess.Popen, int, Path]:
    """bisector running a probe that hangs; returns the process, the probe's pid, and the folder
    its temporary folders go in."""
    pidfile = tmp_path / "probe.pid"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bisector",
            command,
            HANG,
            "--init-kwargs",
            json.dumps({"pidfile": str(pidfile)}),
            "--input",
            "x=B,8",
            "--dim",
            "B=2",
            "--stage",
            "eager",
            "--timeout",
            "200",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    deadline = time.monotonic() + 120
    while not pidfile.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the probe never started (rc {proc.returncode}): {err[-2000:]}")
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    assert alive(pid)
    assert list(tmp.glob("bisector-*")), "the pool's temporary folder should exist while it runs"
    return proc, pid, tmp


def stop(proc: subprocess.Popen, sig: int) -> tuple[float, str, str]:
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"bisector was still running 30 s after {signal.Signals(sig).name}")
    return time.monotonic() - sent, out, err


@pytest.mark.parametrize(
    "sig, fresh",
    [(signal.SIGTERM, False), (signal.SIGTERM, True), (signal.SIGHUP, True)],
    ids=["SIGTERM-server", "SIGTERM-fresh", "SIGHUP-fresh"],
)
def test_a_signal_ends_every_probe_and_removes_the_temporary_folders(tmp_path: Path, sig: int, fresh: bool) -> None:
    proc, pid, tmp = start(tmp_path, "measure", *(["--fresh"] if fresh else []))
    took, _, err = stop(proc, sig)
    assert took < 3, f"bisector took {took:.1f} s to stop"
    assert proc.returncode == 128 + sig, err
    assert gone_within(pid, 1), "the probe outlived bisector"
    assert list(tmp.glob("bisector-*")) == []
    assert f"interrupted ({signal.Signals(sig).name})" in err and "Traceback" not in err


def test_ctrl_c_stops_a_hanging_probe_at_once_and_says_what_is_kept(tmp_path: Path) -> None:
    proc, pid, tmp = start(tmp_path, "find")
    took, _, err = stop(proc, signal.SIGINT)
    assert took < 3, f"Ctrl-C took {took:.1f} s (the probe's timeout is 200 s)"
    assert proc.returncode == 130
    assert gone_within(pid, 1)
    assert list(tmp.glob("bisector-*")) == []
    assert "interrupted (SIGINT): running probes stopped" in err
    assert f"finished probes are kept in {tmp_path / '.bisector'}" in err
    assert "Traceback" not in err


def test_a_fresh_probe_dies_with_bisector_even_when_bisector_is_killed(tmp_path: Path) -> None:
    # SIGKILL leaves bisector no chance to clean up: the kernel ends the child (PR_SET_PDEATHSIG).
    proc, pid, _ = start(tmp_path, "measure", "--fresh")
    proc.kill()
    proc.communicate()
    assert gone_within(pid, 2), "a fresh probe outlived a killed bisector"


def test_a_server_probe_dies_with_bisector_even_when_bisector_is_killed(tmp_path: Path) -> None:
    # The server sees its stdin close and kills its children; they also die with the server.
    proc, pid, _ = start(tmp_path, "measure")
    proc.kill()
    proc.communicate()
    assert gone_within(pid, 3), "a probe outlived a killed bisector"


def test_ctrl_c_after_apply_says_which_files_were_written_and_where_the_backups_are(tmp_path: Path) -> None:
    from tests.conftest import SAMPLES

    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    model = project / "net.py"
    original = (SAMPLES / "list_append.py").read_text()
    model.write_text(original)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bisector",
            "fix",
            "net.py:Net",
            "-i",
            "x=B,32",
            "--dim",
            "B=1:2",
            "-s",
            "eager",
            "--apply",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=project,
    )
    deadline = time.monotonic() + 300
    while model.read_text() == original:  # --apply has written: the re-measurement starts now
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"--apply never wrote (rc {proc.poll()}): {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)
    took, _, err = stop(proc, signal.SIGINT)
    assert took < 3
    assert proc.returncode == 130, err
    (backup,) = (project / ".bisector" / "backups").glob("*/net.py")
    assert backup.read_text() == original
    assert f"--apply had written net.py (backups in {project / '.bisector' / 'backups'})" in err


def test_ctrl_c_in_a_script_calling_the_api_stops_at_once(tmp_path: Path) -> None:
    # No CLI signal handler here: Python's own KeyboardInterrupt, as in a notebook or a script.
    pidfile = tmp_path / "probe.pid"
    code = (
        "from bisector import api\n"
        f"api.measure({HANG!r}, ['x=B,8'], ['B=2'], stages=['eager'], init_kwargs={{'pidfile': "
        f"{str(pidfile)!r}}}, timeout_s=200)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    deadline = time.monotonic() + 120
    while not pidfile.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    took, _, err = stop(proc, signal.SIGINT)
    assert took < 3, f"took {took:.1f} s"
    assert "KeyboardInterrupt" in err
    assert gone_within(pid, 1)


def test_the_temporary_folder_of_a_killed_bisector_is_swept_by_the_next_run(tmp_path: Path) -> None:
    from bisector.probe.workdirs import _owner_id, sweep_stale_workdirs

    proc, pid, tmp = start(tmp_path, "measure")
    (stale,) = tmp.glob("bisector-*")
    proc.kill()  # SIGKILL: no clean-up is possible
    proc.communicate()
    assert gone_within(pid, 3)
    live = tmp / "bisector-live"
    live.mkdir()
    (live / "owner").write_text(_owner_id(os.getpid()))
    assert sweep_stale_workdirs(tmp) == [stale]
    assert not stale.exists() and live.exists()  # a folder whose owner still runs is kept


def test_a_signal_while_the_probe_server_is_still_starting_stops_at_once(tmp_path: Path) -> None:
    import psutil

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bisector", "measure", HANG, "--input", "x=B,8", "--dim", "B=2", "--stage", "eager"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    deadline = time.monotonic() + 60
    server = None

    def server_child() -> psutil.Process | None:
        for c in psutil.Process(proc.pid).children():
            try:
                if "bisector.probe.server" in " ".join(c.cmdline()):
                    return c
            except psutil.Error:  # a short-lived child gone meanwhile
                continue
        return None

    while server is None:  # the server is importing torch now: seconds before it is ready
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        server = server_child()
        time.sleep(0.01)
    took, _, err = stop(proc, signal.SIGTERM)
    assert took < 3, f"took {took:.1f} s"
    assert proc.returncode == 143, err
    assert gone_within(server.pid, 1)
    assert list(tmp.glob("bisector-*")) == []


@pytest.mark.parametrize(
    "sig, fresh", [(signal.SIGHUP, True), (signal.SIGTERM, False)], ids=["SIGHUP-fresh", "SIGTERM-server"]
)
def test_a_signal_a_worker_thread_takes_still_stops_bisector(tmp_path: Path, sig: int, fresh: bool) -> None:
    # The kernel gives a process-directed signal to any thread that does not block it; Python runs
    # the handler only in the main thread, asleep in Future.result() while the probe runs. The
    # signal sent to one worker thread, as the kernel sometimes does, left bisector waiting for the
    # probe's timeout (issue 26: alive 30 s after SIGHUP).
    proc, pid, tmp = start(tmp_path, "measure", *(["--fresh"] if fresh else []))
    workers = sorted(int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid)
    assert workers, "bisector should be running probes from worker threads"
    sent = time.monotonic()
    assert ctypes.CDLL(None, use_errno=True).tgkill(proc.pid, workers[-1], int(sig)) == 0
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"bisector was still running 15 s after {signal.Signals(sig).name} reached a worker thread")
    assert time.monotonic() - sent < 3
    assert proc.returncode == 128 + sig, err
    assert gone_within(pid, 1)
    assert list(tmp.glob("bisector-*")) == []


@pytest.mark.parametrize("fresh", [False, True], ids=["server", "fresh"])
def test_a_signal_at_any_moment_of_the_start_ends_bisector_with_128_plus_n(fresh: bool) -> None:
    # SIGTERM and SIGHUP in the first half second exited 130 (typer's code for any
    # KeyboardInterrupt), and one while a module was being imported exited 1 with a traceback.
    outcomes = [
        run_once(sig, fresh, moment) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) for moment in (0.3, 2.0)
    ]
    failed = [describe(o) + "\n" + o.stderr_tail for o in outcomes if not o.ok]
    assert not failed, "\n".join(failed)
