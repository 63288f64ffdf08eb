"""The command line's conventions (#13): -h, choices listed and checked, BISECTOR_* variables,
-v/-q on stderr, completion."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from bisector.cli.progress_display import ProgressDisplay
from bisector.cli.render import set_up_logging
from bisector.lab.runner import _log
from bisector.probe.types import ProbeCrashed
from tests.conftest import FIXTURES, run_cli


def test_dash_h_is_help_everywhere() -> None:
    assert "Usage: bisector [OPTIONS] COMMAND" in run_cli("-h").stdout
    out = run_cli("find", "-h").stdout
    assert "--stage" in out and "eager|export|inference" in out and "dynamo|torchscript" in out
    assert "BISECTOR_JOBS" in out and "--fail-on" in out and "--verbose" in out


def test_a_choice_outside_the_list_is_a_one_line_usage_error() -> None:
    r = run_cli("measure", f"{FIXTURES / 'crashers.py'}:Fine", "--input", "x=B,8", "--exporter", "onnxmltools")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1 and "dynamo" in r.stderr


def test_common_options_come_from_bisector_variables() -> None:
    env = dict(os.environ, BISECTOR_JOBS="0")
    r = subprocess.run(
        [sys.executable, "-m", "bisector", "measure", f"{FIXTURES / 'crashers.py'}:Fine", "--input", "x=B,8"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "--jobs must be 1 or more" in r.stderr


def test_completion_can_be_shown() -> None:
    assert "--install-completion" in run_cli("--help").stdout


def test_verbosity_sets_the_log_level() -> None:
    log = logging.getLogger("bisector")
    set_up_logging(0, False)
    assert log.level == logging.WARNING
    set_up_logging(1, False)
    assert log.level == logging.INFO
    set_up_logging(2, False)
    assert log.level == logging.DEBUG
    set_up_logging(2, True)
    assert log.level == logging.ERROR
    log.handlers[:], log.propagate = [], True  # as the CLI found it: other tests read the log
    log.setLevel(logging.NOTSET)


def test_a_crashed_probes_stderr_is_logged_in_full_at_info(caplog) -> None:
    tail = "\n".join(f"line {i}" for i in range(200))
    with caplog.at_level(logging.INFO, logger="bisector.probes"):
        _log("eager x2", ProbeCrashed(reason="signal", signal="SIGKILL", exit_code=None, tail=tail, wall_s=1.0))
    assert "line 0" in caplog.text and "line 199" in caplog.text


def test_without_a_terminal_each_finished_stage_is_one_line(capsys) -> None:
    with ProgressDisplay(bar=False, lines=True) as p:
        p.probe_queued("eager")
        p.probe_started("eager")
        p.probe_finished("eager", None)
        p.stage_done("eager", "leak", "leak, +1.0 KB/call (2 probes, 3 s)")
        p.stage_done("export", "failed", "failed (1 probes, 1 s)")  # the error line says it
    err = capsys.readouterr().err
    assert err.strip() == "eager: leak, +1.0 KB/call (2 probes, 3 s)"
    with ProgressDisplay(bar=False, lines=False) as quiet:  # -q
        quiet.stage_done("eager", "clean", "clean")
    assert capsys.readouterr().err == ""
