"""The suite's own check (tests/conftest.py): a run that leaves a process or a bisector-*
temporary folder behind fails, and the process is killed."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def test_a_session_that_leaves_a_process_and_a_folder_fails(pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pidfile = pytester.path / "sleep.pid"
    pytester.makepyfile(
        f"""
        import subprocess, tempfile

        def test_leaves_things_behind():
            proc = subprocess.Popen(["sleep", "600"])
            open({str(pidfile)!r}, "w").write(str(proc.pid))
            tempfile.mkdtemp(prefix="bisector-")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*bisector leftovers:*",
            "*process * still running after the suite: sleep 600*",
            "*temporary folder left after the suite: */bisector-*",
        ]
    )
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the leftover sleep was not killed"
        time.sleep(0.05)


def test_a_clean_session_passes(pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 0
    assert "bisector leftovers" not in result.stdout.str()
