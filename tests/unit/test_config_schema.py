"""[tool.bisector], its model entries and manifests are checked against a schema (issue 12,
item 6): unknown keys are refused with a "did you mean", types and ranges are checked, and every
error names the file, the table and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bisector import api
from bisector.common.errors import UserError
from bisector.options.config import load_config
from bisector.repairs.manifest import load_models


def _project(tmp_path: Path, toml: str) -> Path:
    (tmp_path / "net.py").write_text("class Net: pass\n")
    (tmp_path / "pyproject.toml").write_text(toml)
    return tmp_path


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as exc:
        fn(*args, **kwargs)
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_a_misspelt_key_is_refused_with_the_right_one(tmp_path: Path) -> None:
    root = _project(tmp_path, "[tool.bisector]\ntimout = 30\n")
    text = _error(load_config, str(root / "net.py"))
    assert text == f"{root / 'pyproject.toml'}: [tool.bisector] timout: unknown key; did you mean timeout?"


def test_a_misspelt_key_in_a_model_entry_names_the_entry(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        '[tool.bisector]\n[[tool.bisector.models]]\nspec = "net.py:Net"\n[[tool.bisector.models]]\n'
        'spec = "net.py:Net"\nmem_cp = "2GB"\n',
    )
    text = _error(load_config, str(root / "net.py"))
    assert "[[tool.bisector.models]] #2 (net.py:Net) mem_cp: unknown key; did you mean mem_cap?" in text
    assert str(root / "pyproject.toml") in text


def test_an_unknown_key_far_from_any_lists_the_known_ones(tmp_path: Path) -> None:
    root = _project(tmp_path, "[tool.bisector]\ncolour = 'red'\n")
    assert "known keys: " in _error(load_config, str(root / "net.py"))


@pytest.mark.parametrize(
    "line, expected",
    [
        ('timeout = "soon"', "timeout: expected a number of seconds, got a string 'soon'"),
        ("timeout = -1", "timeout: -1 must be above 0"),
        ('seed = "abc"', "seed: expected a whole number, got a string 'abc'"),
        ("retries = 1.5", "retries: expected a whole number"),
        ("noise_rss = []", 'noise_rss: expected a size such as "8GB" or a number of bytes, got a list []'),
        ('noise_gpu = "lots"', "noise_gpu: 'lots' is not a size"),
        ('mem_cap = "1MB"', "mem_cap: '1MB' is below 400.0 MB"),
        ('stages = ["eagr"]', "stages: unknown value 'eagr', use one of eager, export, inference; did you mean eager?"),
        ('exporter = "dynamoo"', "exporter: unknown value 'dynamoo'"),
        ('device = "tpu"', "device: unknown value 'tpu'"),
        ('inputs = ["x=B,3:complex"]', "inputs: --input 'x=B,3:complex': unknown dtype"),
        ('dims = ["B=4:1"]', "dims: --dim 'B=4:1': need 1 <= MIN <= MAX"),
        ("fresh = 1", "fresh: expected true or false, got a number 1"),
        ('models = "x"', "models: expected a list of tables, got a string 'x'"),
        ("init_kwargs = 3", "init_kwargs: expected a table"),
    ],
)
def test_types_and_ranges_are_checked(tmp_path: Path, line: str, expected: str) -> None:
    root = _project(tmp_path, f"[tool.bisector]\n{line}\n")
    text = _error(load_config, str(root / "net.py"))
    assert text.startswith(f"{root / 'pyproject.toml'}: [tool.bisector] ")
    assert expected in text


def test_a_model_entry_needs_a_spec(tmp_path: Path) -> None:
    root = _project(tmp_path, '[tool.bisector]\n[[tool.bisector.models]]\ninputs = ["x=B"]\n')
    assert "[[tool.bisector.models]] #1: spec is required" in _error(load_config, str(root / "net.py"))


def test_valid_tables_still_load(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        '[tool.bisector]\ninputs = "x=B,8"\ndims = {B = "1:4"}\nstages = "eager"\ntimeout = 30\nmem_cap = "2GB"\n'
        "noise_rss = 5000000\nfresh = true\nseed = 3\n"
        '[[tool.bisector.models]]\nspec = "net.py:Net"\ninit_kwargs = {depth = 2}\nexport_script = "export.py"\n',
    )
    cfg = load_config(str(root / "net.py"))
    assert cfg.get("timeout") == 30
    p = api.prepare(str(root / "net.py") + ":Net")
    assert p.options.timeout_s == 30 and p.options.mem_cap == 2_000_000_000 and p.options.fresh
    assert p.plan.dims["B"] == (1, 4)


def test_manifests_are_checked_against_the_same_schema(tmp_path: Path) -> None:
    manifest = tmp_path / "models.toml"
    manifest.write_text('[[models]]\nspec = "net.py:Net"\ntimout = 3\n')
    text = _error(load_models, None, str(manifest))
    assert text == f"{manifest}: [[models]] #1 (net.py:Net) timout: unknown key; did you mean timeout?"
    js = tmp_path / "models.json"
    js.write_text('{"models": [{"spec": "net.py:Net"}], "seed": "x"}')
    assert _error(load_models, None, str(js)) == f"{js}: seed: expected a whole number, got a string 'x'"
