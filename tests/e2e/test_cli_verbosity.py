"""-q, -v and -vv do what the README says (issue 25): -q the verdict line and errors only, -v each
stage's reasons and each probe's outcome, -vv debug."""

from __future__ import annotations

import re

import pytest

from tests.conftest import SAMPLES, run_cli

pytestmark = pytest.mark.probe
LEAKY = f"{SAMPLES / 'list_append.py'}:Net"


def test_quiet_prints_the_verdict_line_and_nothing_else(tmp_path) -> None:
    # No --input: the inputs are inferred, which prints a line on stderr unless -q.
    r = run_cli("measure", LEAKY, "--stage", "eager", "-q", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("verdict: leak"), r.stdout


def test_verbose_adds_each_probes_outcome_and_the_stages_reasons(tmp_path) -> None:
    loud = run_cli("measure", LEAKY, "--stage", "eager", "-v", cwd=tmp_path)
    assert loud.returncode == 1, loud.stderr
    assert "inputs inferred:" in loud.stderr
    assert re.search(r"probe eager: ok in [0-9.]+ s", loud.stderr), loud.stderr
    assert re.search(r"eager leak: .+", loud.stderr), loud.stderr  # the verdict's reasons
    assert "reused from" not in loud.stderr  # -vv's detail
    # The counts agree: the stage line's probes are the run's probes plus those reused.
    stage = int(re.search(r"eager: leak.*\((\d+) probes?", loud.stderr).group(1))
    m = re.search(r"verdict: leak\s+(?:(\d+) probes?(?: \(\+(\d+) reused\))?|reused (\d+) probes?)", loud.stdout)
    assert m is not None, loud.stdout
    ran, reused = int(m.group(1) or 0), int(m.group(2) or m.group(3) or 0)
    assert ran + reused == stage, (loud.stdout, loud.stderr)
