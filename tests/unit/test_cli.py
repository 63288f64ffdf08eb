"""The command line promises: instant --help, one-line errors with exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import FIXTURES, run_cli


def test_help_does_not_import_torch() -> None:
    code = "import sys, bisector.cli\nassert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_lists_the_commands() -> None:
    r = run_cli("--help")
    assert r.returncode == 0
    assert "measure" in r.stdout


def test_version() -> None:
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("bisector ")


def _one_line_error(r: subprocess.CompletedProcess, text: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert text in lines[0]


def test_unknown_option() -> None:
    _one_line_error(run_cli("measure", "x.py:Net", "--bogus"), "No such option: --bogus")


def test_missing_file() -> None:
    _one_line_error(run_cli("measure", "nowhere.py:Net", "-i", "x=B,3"), "does not exist")


def test_missing_name_suggests_what_exists() -> None:
    _one_line_error(
        run_cli("measure", f"{FIXTURES / 'crashers.py'}:Segfalt", "-i", "x=B,8"), "defines no 'Segfalt'; it defines"
    )


def test_bad_input_grammar() -> None:
    _one_line_error(run_cli("measure", f"{FIXTURES / 'crashers.py'}:Fine", "-i", "x=B,8:complex"), "unknown dtype")


def test_missing_inputs() -> None:
    # A model whose inputs cannot be inferred (issue #13: crashers.py:Fine's now are).
    _one_line_error(run_cli("measure", f"{FIXTURES / 'inference.py'}:TwoInputs"), "no inputs given")


def test_a_toolchain_leak_does_not_fail_the_users_model() -> None:
    from types import SimpleNamespace

    from bisector.cli import EXIT_BY_STATUS, EXIT_CLEAN, EXIT_FOUND
    from bisector.pipeline.run import measured_status

    def _measure_exit(report: SimpleNamespace) -> int:
        return EXIT_BY_STATUS[measured_status(report).value]

    def report(*kinds: str) -> SimpleNamespace:
        return SimpleNamespace(stages={f"s{i}": SimpleNamespace(kind=k) for i, k in enumerate(kinds)})

    assert _measure_exit(report("clean", "toolchain-leak")) == EXIT_CLEAN
    assert _measure_exit(report("leak", "toolchain-leak")) == EXIT_FOUND
