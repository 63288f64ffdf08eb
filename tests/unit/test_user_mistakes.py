"""User mistakes are user errors: one line naming what is wrong, exit 2, before any probe runs
(issue 12, item 5). Each of these used to end as an internal error (exit 3) or as probes that
all "crashed" (exit 4)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bisector import api
from bisector.common.errors import UserError
from tests.conftest import FIXTURES, run_cli

FINE = f"{FIXTURES / 'crashers.py'}:Fine"


def _one_line_exit_2(r, *texts: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for text in texts:
        assert text in lines[0], lines[0]
    return lines[0]


def test_inputs_too_large_for_the_memory_cap_are_refused_with_the_figure() -> None:
    # 100000 x 3 x 4096 x 4096 float32 is 20 TB: the probe used to try to allocate it.
    r = run_cli(
        "measure", FINE, "--input", "x=B,3,4096,4096", "--dim", "B=1:100000", "--stage", "eager", "--mem-cap", "8GB"
    )
    line = _one_line_exit_2(r, "x=100000,3,4096,4096:float32", "20.1 TB", "8.0 GB")
    assert "--mem-cap" in line


def test_the_default_memory_cap_also_bounds_the_inputs(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="over the memory cap"):
        api.prepare(FINE, ["x=B,3,4096,4096"], ["B=1:100000"])


def test_a_dim_too_large_for_any_integer_type_is_a_user_error() -> None:
    r = run_cli("measure", FINE, "--input", "x=B,99999999999999999999", "--stage", "eager")
    _one_line_exit_2(r, "too large")


@pytest.mark.parametrize("cap", ["0", "-5", "10MB", "300MB"])
def test_a_memory_cap_no_probe_can_live_under_is_refused(cap: str) -> None:
    r = run_cli("measure", FINE, "--input", "x=B,8", "--stage", "eager", f"--mem-cap={cap}")
    _one_line_exit_2(r, "--mem-cap")


@pytest.mark.parametrize(
    "line, key",
    [
        ('timeout = "soon"', "timeout"),
        ('seed = "abc"', "seed"),
        ("noise_rss = []", "noise_rss"),
        ('models = "x"', "models"),
        ("mem_cap = -5", "mem_cap"),
        ("timeout = 0", "timeout"),
    ],
)
def test_wrong_config_values_are_user_errors_naming_file_table_and_key(tmp_path: Path, line: str, key: str) -> None:
    (tmp_path / "net.py").write_text("class Net: pass\n")
    (tmp_path / "pyproject.toml").write_text(f"[tool.bisector]\n{line}\n")
    r = run_cli("measure", "net.py:Net", "--input", "x=B,8", cwd=tmp_path)
    _one_line_exit_2(r, "pyproject.toml", "[tool.bisector]", key)


def test_config_given_as_a_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.bisector]\n")
    r = run_cli("measure", FINE, "--input", "x=B,8", "--config", str(tmp_path))
    _one_line_exit_2(r, "is a folder", "pyproject.toml")


def test_unicode_input_names_and_symbols_are_accepted() -> None:
    p = api.prepare(FINE, ["χ=B,Länge"], ["Länge=2:4"])
    assert [i.name for i in p.plan.inputs] == ["χ"]
    assert p.plan.dims["Länge"] == (2, 4)


def test_a_name_that_is_no_identifier_says_what_is_allowed() -> None:
    r = run_cli("measure", FINE, "--input", "1x=B,8")
    _one_line_exit_2(r, "Python identifier")


@pytest.mark.parametrize("text", ["x=B,²", "x=B,8:float32:0:inf", "x=B,8:float32:nan:1"])
def test_odd_numbers_in_inputs_are_user_errors(text: str) -> None:
    with pytest.raises(UserError):
        api.prepare(FINE, [text])


@pytest.mark.parametrize("dim", ["B=1e3", "B=1:" + "9" * 5000, "B=²"])
def test_odd_numbers_in_dims_are_user_errors(dim: str) -> None:
    with pytest.raises(UserError):
        api.prepare(FINE, ["x=B,8"], [dim])


# -- issue 19, item 7: values checked up front, not by torch or numpy inside the probe ----------


@pytest.mark.parametrize(
    "text, fits",
    [
        ("x=B,32:int64:0:99999999999999999999999", "int64"),  # was exit 3 from the probe
        ("x=B,8:int8:0:1000", "int8"),  # was exit 3 from the probe
    ],
)
def test_a_value_range_its_dtype_cannot_hold_is_refused_before_any_probe(text: str, fits: str) -> None:
    r = run_cli("measure", FINE, "--input", text, "--stage", "eager")
    _one_line_exit_2(r, "does not fit", fits)


@pytest.mark.parametrize(
    "text, ok",
    [
        ("x=B:int8:-128:128", True),  # HIGH is exclusive: -128..127
        ("x=B:uint8:0:256", True),
        ("x=B:int64:0:9223372036854775807", True),
        ("x=B:uint8:-1:10", False),
        ("x=B:int32:0:2147483649", False),
        ("x=B:int64:0:9223372036854775808", False),  # torch cannot even take HIGH
        ("x=B:int64:0:1.5", False),
        ("x=B:float16:0:70000", False),
        ("x=B:float32:-3e38:3e38", False),  # HIGH - LOW is inf in float32
    ],
)
def test_value_ranges_are_held_to_the_dtype(text: str, ok: bool) -> None:
    from bisector.model.spec import parse_input

    if ok:
        spec = parse_input(text)
        assert isinstance(spec.low, int) and isinstance(spec.high, int)  # exact, not rounded floats
    else:
        with pytest.raises(UserError):
            parse_input(text)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_seed_numpy_refuses_is_refused_before_any_probe(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["measure", FINE, "--input", "x=B,8", "--stage", "eager"]
    if how == "flag":
        args += ["--seed", "-1"]
    else:
        monkeypatch.setenv("BISECTOR_SEED", "4294967296")
    r = run_cli(*args)
    _one_line_exit_2(r, "seed", "4294967294")


@pytest.mark.parametrize(
    "name, value", [("BISECTOR_JOBS", "abc"), ("BISECTOR_CAPTURE_CAP", "lots"), ("BISECTOR_TIMEOUT", "-1")]
)
def test_a_bad_variable_is_an_error_even_where_a_flag_overrides_it(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    r = run_cli("measure", FINE, "--input", "x=B,8", "--stage", "eager", "--jobs", "1", "--timeout", "60")
    _one_line_exit_2(r, name, repr(value))


@pytest.mark.parametrize("cap", ["99999999999999999999", "10PB"])
def test_a_memory_cap_no_probe_could_reach_is_refused(cap: str) -> None:
    # Both used to differ: the first was taken (no cap in force), the second was "not a size".
    r = run_cli("measure", FINE, "--input", "x=B,8", "--stage", "eager", f"--mem-cap={cap}")
    _one_line_exit_2(r, "--mem-cap", "more than this machine's memory and swap")


def test_a_memory_cap_above_the_memory_but_within_the_swap_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import psutil

    from bisector.common.units import parse_size

    assert parse_size("10PB") == 10**16
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("M", (), {"total": 8 * 10**9})())
    monkeypatch.setattr(psutil, "swap_memory", lambda: type("S", (), {"total": 8 * 10**9})())
    log = logging.getLogger("bisector")  # the CLI may have stopped its propagation: listen on it
    log.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="bisector"):
            p = api.prepare(FINE, ["x=B,8"], mem_cap="12GB")
    finally:
        log.removeHandler(caplog.handler)
    assert p.options.mem_cap == 12 * 10**9
    assert "more than this machine's memory (8.0 GB)" in caplog.text
    with pytest.raises(UserError, match="memory and swap"):
        api.prepare(FINE, ["x=B,8"], mem_cap="17GB")
