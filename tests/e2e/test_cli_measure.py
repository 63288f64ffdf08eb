"""`bisector measure` as a user runs it: report, JSON, exit codes, and user errors."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FIXTURES, SAMPLES, run_cli

pytestmark = pytest.mark.probe


def test_json_report_for_a_leaking_sample() -> None:
    r = run_cli(
        "measure",
        f"{SAMPLES / 'list_append.py'}:Net",
        "-i",
        "x=B,32",
        "--stage",
        "eager",
        "--stage",
        "inference",
        "--json",
    )
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert set(report) >= {"spec", "verdict", "stages", "probes", "wall_s"}
    assert report["spec"] == "list_append.py:Net"
    assert report["verdict"] == "leak"
    assert set(report["stages"]) == {"eager", "inference"}
    eager = report["stages"]["eager"]
    for key in (
        "verdict",
        "growth_bytes_per_call",
        "growth_bytes_per_new_shape",
        "baseline_bytes_per_call",
        "noise_bytes",
        "samples",
    ):
        assert key in eager
    assert eager["verdict"] == "leak"
    assert eager["objects_per_call"] == 1
    assert eager["samples"] and {"phase", "dims", "rss", "objects"} <= set(eager["samples"][0])
    assert report["stages"]["inference"]["verdict"] == "clean"
    assert report["probes"] >= 2


def test_terminal_report_shows_verdicts_figures_and_chart() -> None:
    r = run_cli("measure", f"{SAMPLES / 'native_leak.py'}:Net", "-i", "x=B,16", "-s", "eager")
    assert r.returncode == 1, r.stderr
    out = r.stdout
    assert "eager" in out and "leak" in out
    assert "MB/call" in out
    assert "heap " in out and "│" in out  # the curve of the metric that decided, with phase marks
    assert "floor" in out and "native 2.1 MB" in out  # the floor reached, and who owns the growth
    assert "baseline" in out
    assert "verdict: leak" in out


# A clean model's measure exits 0 and says "verdict: clean": test_reports.py's clean bundle test
# (the same measure, with --bundle).


def test_inputs_from_the_hook_and_init_kwargs_reach_the_model() -> None:
    """bisector_inputs() gives the ids and the keyword mask; --init-kwargs builds depth and the leak."""
    spec = f"{FIXTURES / 'hooked.py'}:Masked"
    dims = ["-d", "B=1:4", "-d", "T=5:40", "-s", "eager", "--json"]
    clean = run_cli("measure", spec, *dims, "--init-kwargs", '{"depth": 3}')
    assert clean.returncode == 0, clean.stderr
    samples = json.loads(clean.stdout)["stages"]["eager"]["samples"]
    assert {tuple(sorted(s["dims"])) for s in samples} == {("B", "T")}
    leaky = run_cli("measure", spec, *dims, "--init-kwargs", '{"depth": 2, "keep": true}')
    assert leaky.returncode == 1, leaky.stderr
    assert json.loads(leaky.stdout)["stages"]["eager"]["objects_per_call"] == 1


def _user_error(r, *texts: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback (most recent call last)" not in r.stderr
    assert r.stderr.startswith("error: ")
    for text in texts:
        assert text in r.stderr


def test_constructor_raising_shows_the_users_traceback_tail() -> None:
    r = run_cli("measure", f"{FIXTURES / 'crashers.py'}:RaisingCtor", "-i", "x=B,8", "-s", "eager")
    _user_error(r, "building crashers.py:RaisingCtor raised ValueError: width must be positive", "crashers.py")


def test_forward_raising_is_a_user_error() -> None:
    r = run_cli("measure", f"{FIXTURES / 'crashers.py'}:RaisingForward", "-i", "x=B,8", "-s", "eager")
    _user_error(r, "forward of the model raised", "missing_layer")


def test_model_that_cannot_export_is_a_user_error_with_a_hint() -> None:
    r = run_cli("measure", f"{FIXTURES / 'crashers.py'}:NotExportable", "-i", "x=B,8,8", "-s", "export")
    _user_error(r, "export stage", "linalg_eig", "--exporter torchscript")


def test_not_a_module() -> None:
    r = run_cli("measure", f"{FIXTURES / 'crashers.py'}:NUMBER", "-i", "x=B,8", "-s", "eager")
    _user_error(r, "is int, not an nn.Module")


def test_crashing_probe_is_reported_not_raised() -> None:
    r = run_cli("measure", f"{FIXTURES / 'crashers.py'}:Segfault", "-i", "x=B,8", "-s", "eager", "--json")
    assert r.returncode == 4, r.stderr
    stage = json.loads(r.stdout)["stages"]["eager"]
    assert stage["verdict"] == "crashed"
    assert stage["error"]["signal"] == "SIGSEGV"
