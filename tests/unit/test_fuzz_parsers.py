"""Fuzzing what users type (issue 12): random --input/--dim text and random [tool.bisector]
tables go through the parser, the config loader and api.prepare. The only outcomes allowed are a
valid plan or a UserError (exit 2); any other exception would reach the user as an internal
error (exit 3)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bisector import api
from bisector.common.errors import UserError
from bisector.model.spec import ALL_DTYPES, InputPlan, build_input_plan
from bisector.options.config import ToolTable, load_config, validate
from bisector.pipeline import prepare

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.one_of(st.sampled_from(["x", "ids", "χ", "B", "T", "H", "_", "1x", "a b", ""]), st.text(max_size=6))
numbers = st.one_of(
    st.integers(min_value=-5, max_value=2**70).map(str),
    st.sampled_from(["0", "1", "16", "99999999999999999999", "1e3", "²", "-1", " 4", "inf", "nan", "9" * 5000]),
)
dim_tokens = st.one_of(numbers, names)
dtypes = st.one_of(st.sampled_from(ALL_DTYPES + ("float", "long", "complex", "")), st.text(max_size=5))


@st.composite
def input_texts(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=30))
    text = f"{draw(names)}={','.join(draw(st.lists(dim_tokens, min_size=0, max_size=5)))}"
    tail = draw(st.sampled_from([0, 1, 2, 3]))
    if tail >= 1:
        text += f":{draw(dtypes)}"
    if tail >= 2:
        text += f":{draw(numbers)}:{draw(numbers)}"
    if tail == 3:
        text += f":{draw(st.text(max_size=3))}"
    return text


@st.composite
def dim_texts(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=20))
    text = f"{draw(names)}={draw(numbers)}"
    if draw(st.booleans()):
        text += f":{draw(numbers)}"
    return text


def _check_plan(plan: InputPlan) -> None:
    assert isinstance(plan, InputPlan)
    for spec in plan.inputs:
        assert spec.name.isidentifier() and spec.dtype in ALL_DTYPES
        for d in spec.dims:
            assert (isinstance(d, int) and d >= 0) or (isinstance(d, str) and d in plan.dims)
    for lo, hi in plan.dims.values():
        assert 1 <= lo <= hi


@SETTINGS
@given(st.lists(input_texts(), max_size=3), st.lists(dim_texts(), max_size=3), st.sampled_from([None, 1_000_000_000]))
def test_input_and_dim_text_gives_a_plan_or_a_user_error(inputs: list[str], dims: list[str], cap: int | None) -> None:
    try:
        plan = build_input_plan(inputs, dims)
        prepare._check_inputs_fit(plan, cap)
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    _check_plan(plan)


# -- config ------------------------------------------------------------------------------------

KEYS = [
    "inputs",
    "dims",
    "stages",
    "exporter",
    "device",
    "metric",
    "noise_rss",
    "noise_gpu",
    "seed",
    "retries",
    "timeout",
    "mem_cap",
    "fresh",
    "init_kwargs",
    "export_script",
    "infer_script",
    "fixers",
    "models",
    "timout",
    "spec",
]
scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["x=B,8", "B=1:4", "eager", "dynamo", "cpu", "rss", "5MB", "1GB", "net.py:Net", "1e999"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
    max_leaves=6,
)
tables = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), values, max_size=5)


def _toml(value: object) -> str:
    """A TOML inline value; JSON's string, number and list syntax is TOML's too."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


@SETTINGS
@given(tables)
def test_any_table_validates_or_is_a_user_error(table: dict) -> None:
    try:
        validate(ToolTable, table, "pyproject.toml", "[tool.bisector]")
    except UserError as exc:
        assert str(exc).startswith("pyproject.toml: ")


@SETTINGS
@given(
    st.one_of(
        tables.map(lambda t: "[tool.bisector]\n" + "".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in t.items())),
        st.text(max_size=80).map(lambda t: "[tool.bisector]\n" + t),
    )
)
def test_any_pyproject_text_gives_a_plan_or_a_user_error(text: str) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as folder:
        root = Path(folder)
        (root / "net.py").write_text("class Net: pass\n")
        (root / "pyproject.toml").write_text(text, encoding="utf-8")
        try:
            load_config(str(root / "net.py"))
            prepared = api.prepare(f"{root / 'net.py'}:Net", config=str(root / "pyproject.toml"))
        except UserError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        _check_plan(prepared.plan)
        assert prepared.options.timeout_s > 0
