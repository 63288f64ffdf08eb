"""The option table (bisector/options/table.py) is the one place an option is declared (issue 23,
item 1): the CLI's flags, variables and choices are the table's, and every option reaches
``Prepared`` from each source it has: its flag, its BISECTOR_* variable, `[tool.bisector]` and a
manifest entry. No probe runs: the CLI is stopped right after ``prepare``."""

from __future__ import annotations

import enum
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from bisector.cli import app
from bisector.common.errors import UserError
from bisector.options.config import ToolTable, validate
from bisector.options.table import ENTRY, OPTIONS, TABLE, entry_keywords
from bisector.pipeline import prepare as prepare_module
from bisector.pipeline.prepare import Options, Prepared, prepare

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODEL = "class Net:\n    def forward(self, x):\n        return x\n"
BASE_INPUT = "x=B,4"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    (root / "models").mkdir(parents=True)
    (root / "models" / "net.py").write_text(MODEL)
    (root / "export.py").write_text("import torch\n")
    (root / "serve.py").write_text("import onnxruntime\n")
    (root / "alt.toml").write_text(f'[tool.bisector]\ninputs = ["{BASE_INPUT}"]\nretries = 4\n')
    monkeypatch.chdir(root)
    for name in [o.env for o in OPTIONS.values() if o.env]:
        monkeypatch.delenv(name, raising=False)
    return root


SPEC = "models/net.py:Net"


def _cases(root: Path) -> dict[str, tuple[list[str], Any, str | None, Callable[[Prepared], Any], Any]]:
    """Per option of prepare's: (its flag's arguments, its config/manifest value, its variable's
    text, what Prepared shows of it, what that should be)."""
    alt, run = str(root / "alt.toml"), str(root / "runs")
    export, serve = str(root / "export.py"), str(root / "serve.py")
    return {
        "init_kwargs": (
            ["--init-kwargs", '{"width": 3}'],
            {"width": 3},
            None,
            lambda p: p.model.init_kwargs,
            {"width": 3},
        ),
        "inputs": (["--input", "y=B,5"], ["y=B,5"], None, lambda p: [i.name for i in p.plan.inputs], ["y"]),
        "dims": (["--dim", "B=2:3"], ["B=2:3"], None, lambda p: p.plan.dims["B"], (2, 3)),
        "stages": (["--stage", "eager"], ["eager"], "eager", lambda p: p.options.stages, ("eager",)),
        "exporter": (
            ["--exporter", "torchscript"],
            "torchscript",
            "torchscript",
            lambda p: p.options.probe.exporter,
            "torchscript",
        ),
        "device": (["--device", "cpu"], "cpu", "cpu", lambda p: p.options.probe.device, "cpu"),
        "keep_autograd": (["--keep-autograd"], None, None, lambda p: p.options.probe.keep_autograd, True),
        "tracemalloc": (["--tracemalloc"], None, None, lambda p: p.options.probe.tracemalloc, True),
        "metric": (["--metric", "uss"], "uss", "uss", lambda p: p.options.metric, "uss"),
        "noise_rss": (["--noise-rss", "7MB"], "7MB", None, lambda p: p.options.bands.rss, 7_000_000),
        "noise_gpu": (["--noise-gpu", "300MB"], "300MB", None, lambda p: p.options.bands.gpu, 300_000_000),
        "seed": (["--seed", "7"], 7, "7", lambda p: p.options.seed, 7),
        "retries": (["--retries", "5"], 5, None, lambda p: p.options.retries, 5),
        "floor": (["--floor", "eager=3KB"], ["eager=3KB"], None, lambda p: p.options.floor_targets["eager"], 3000.0),
        "jobs": (["--jobs", "3"], None, "3", lambda p: p.options.jobs, 3),
        "timeout": (["--timeout", "45"], 45, "45", lambda p: p.options.timeout_s, 45.0),
        "mem_cap": (["--mem-cap", "1GB"], "1GB", "1GB", lambda p: p.options.mem_cap, 1_000_000_000),
        "fresh": (["--fresh"], True, "1", lambda p: p.options.fresh, True),
        "run_dir": (["--run-dir", run], None, run, lambda p: p.given.run_dir, run),
        # The config file given is the one read: its retries, not the project's.
        "config": (["--config", alt], None, alt, lambda p: p.options.retries, 4),
        "cache": (["--no-cache"], None, None, lambda p: p.options.cache_dir, ""),
        "export_script": (["--export-script", export], export, None, lambda p: p.given.export_script, export),
        "infer_script": (["--infer-script", serve], serve, None, lambda p: p.given.infer_script, serve),
        "artifact": ([], "net_v2", None, lambda p: p.given.artifact, "net_v2"),
    }


# Options that are not prepare's: [tool.bisector] hands them on in Prepared.config (the CLI's
# --fail-on policy, fix's checks and choices read them there).
CONFIG_ONLY = {
    "fail_on": "leak",
    "budget": "2GB",
    "fixers": ["hook-once"],
    "check": "python -m pytest -q",
    "check_timeout": 30.0,
    "pick": 2,
    "prefer": "bounded",
    "capture_cap": "1GB",
}
# Options whose config key no run reads yet (none: the scripts and artifact were read only from
# manifest entries until prepare took them from [tool.bisector] too).
CONFIG_GAPS: set[str] = set()


def _prepare_options() -> list[str]:
    return [o.name for o in OPTIONS.values() if o.keyword is not None]


def test_every_option_of_prepare_has_a_case_and_every_other_a_config_value(project: Path) -> None:
    assert set(_cases(project)) == set(_prepare_options())
    assert set(CONFIG_ONLY) == {o.name for o in OPTIONS.values() if o.keyword is None and TABLE in o.scope}


def _through_cli(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]) -> Prepared:
    """What the CLI's `measure` prepared from these arguments and variables; it stops there."""
    seen: list[Prepared] = []

    def stop(*a: Any, **k: Any) -> Prepared:
        seen.append(prepare(*a, **k))
        raise UserError("stopped after prepare")

    monkeypatch.setattr(prepare_module, "prepare", stop)
    result = CliRunner().invoke(app, ["measure", SPEC, *args], env=env)
    assert seen, result.output
    assert "stopped after prepare" in result.output
    return seen[0]


def _write_config(root: Path, key: str | None, value: Any) -> None:
    lines = ["[tool.bisector]"]
    if key != "inputs":
        lines.append(f'inputs = ["{BASE_INPUT}"]')
    if key is not None:
        lines.append(f"{key} = {_toml(value)}")
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", [n for n in _prepare_options() if OPTIONS[n].flags])
def test_the_flag_reaches_prepared(name: str, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args, _, _, read, want = _cases(project)[name]
    base = [] if name == "inputs" else ["--input", BASE_INPUT]
    assert read(_through_cli(monkeypatch, [*base, *args], {})) == want


@pytest.mark.parametrize("name", [n for n in _prepare_options() if OPTIONS[n].env])
def test_the_variable_reaches_prepared(name: str, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, text, read, want = _cases(project)[name]
    _write_config(project, None, None)  # the inputs come from the config: no flag is given
    assert read(_through_cli(monkeypatch, [], {OPTIONS[name].env: text})) == want


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="read from manifest entries only"))
        if n in CONFIG_GAPS
        else n
        for n in _prepare_options()
        if TABLE in OPTIONS[n].scope
    ],
)
def test_the_config_key_reaches_prepared(name: str, project: Path) -> None:
    _, value, _, read, want = _cases(project)[name]
    _write_config(project, name, value)
    assert read(prepare(SPEC)) == want


@pytest.mark.parametrize("name", sorted(CONFIG_ONLY))
def test_a_config_key_not_of_prepare_is_handed_on_in_prepared(name: str, project: Path) -> None:
    _write_config(project, name, CONFIG_ONLY[name])
    assert prepare(SPEC, Options(inputs=(BASE_INPUT,))).config[name] == CONFIG_ONLY[name]


def _manifest_entry(root: Path, key: str, value: Any) -> dict[str, Any]:
    """The entry as a manifest file holds it, checked by the config's schema."""
    inputs = "" if key == "inputs" else f'inputs = ["{BASE_INPUT}"]\n'
    (root / "models.toml").write_text(f'[[models]]\nspec = "{SPEC}"\n{inputs}{key} = {_toml(value)}\n')
    data = tomllib.loads((root / "models.toml").read_text())
    (entry,) = validate(ToolTable, data, root / "models.toml", "")["models"]
    return {k: v for k, v in entry.items() if k != "spec"}


@pytest.mark.parametrize("name", [n for n in _prepare_options() if ENTRY in OPTIONS[n].scope])
def test_the_manifest_key_reaches_prepared(name: str, project: Path) -> None:
    _, value, _, read, want = _cases(project)[name]
    keywords = entry_keywords(_manifest_entry(project, name, value))
    assert read(prepare(SPEC, Options.of(**keywords))) == want


def test_entry_keywords_leave_what_is_not_prepares_to_its_users() -> None:
    entry = {"seed": 3, "timeout": 9, "fail_on": "leak", "budget": "1GB", "check": "true", "dims": {"B": "1:4"}}
    assert entry_keywords(entry) == {"seed": 3, "timeout_s": 9, "dims": ("B=1:4",)}


# -- the CLI declares no option the table does not know ------------------------------------------


def _enum_values(annotation: Any) -> tuple[str, ...]:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return tuple(m.value for m in annotation)
    for arg in typing.get_args(annotation):
        values = _enum_values(arg)
        if values:
            return values
    return ()


def _cli_options() -> list[tuple[str, Any]]:
    group = typer.main.get_command(app)
    return [
        (command, p) for command, cmd in group.commands.items() for p in cmd.params if p.param_type_name == "option"
    ]


def _choices(param: Any) -> tuple[str, ...]:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        return _enum_values(descriptor.annotation)
    return tuple(getattr(getattr(param, "type", None), "choices", ()) or ())  # click's own Choice


def test_every_cli_option_with_a_counterpart_is_the_tables() -> None:
    by_flag = {flag: o for o in OPTIONS.values() for flag in o.flags}
    keys = {o.name for o in OPTIONS.values() if o.scope}
    checked = 0
    for command, param in _cli_options():
        counterpart = (param.envvar or "").startswith("BISECTOR_") or keys & {param.name, param.name + "s"}
        if not counterpart and param.opts[0] not in by_flag:
            continue
        where = f"bisector {command} {param.opts[0]}"
        option = by_flag.get(param.opts[0])
        assert option is not None, f"{where} has a config/env counterpart but no row in options/table.py"
        assert set(param.opts) == set(option.flags), where
        assert (param.envvar or None) == option.env, where
        assert _choices(param) == option.choices, where
        checked += 1
    assert checked >= len([o for o in OPTIONS.values() if o.flags])


def test_every_flag_in_the_table_is_on_the_command_line() -> None:
    flags = {flag for _, p in _cli_options() for flag in p.opts}
    assert [f for o in OPTIONS.values() for f in o.flags if f not in flags] == []


def test_config_scripts_are_the_pyproject_folders_and_a_missing_one_adds_nothing(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "pyproject.toml").write_text(
        f'[tool.bisector]\ninputs = ["{BASE_INPUT}"]\nexport_script = "export.py"\ninfer_script = "gone.py"\n'
    )
    monkeypatch.chdir(project / "models")  # relative to the pyproject, not to where bisector runs
    p = prepare(SPEC.replace("models/", ""))
    assert p.given.export_script == str(project / "export.py")
    assert p.given.infer_script is None
    # The flag still wins over the config.
    other = project / "other.py"
    other.write_text("import torch\n")
    assert prepare(SPEC.replace("models/", ""), Options(export_script=str(other))).given.export_script == str(other)
