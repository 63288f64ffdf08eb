from __future__ import annotations

from pathlib import Path

import pytest

from bisector.common.errors import UserError
from bisector.model.spec import InputSpec, build_input_plan, parse_dim, parse_input, parse_model_spec


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    f = tmp_path / "net.py"
    f.write_text(
        "import torch\nfrom torch import nn as tnn\n"
        "class Net(tnn.Module):\n    pass\n"
        "def make():\n    return Net()\n"
        "INSTANCE = Net()\n"
    )
    return f


def test_model_spec_resolves_path_and_name(model_file: Path) -> None:
    spec = parse_model_spec(f"{model_file}:Net", '{"depth": 4}')
    assert spec.path == str(model_file.resolve())
    assert spec.name == "Net"
    assert spec.init_kwargs == {"depth": 4}
    assert spec.label == "net.py:Net"


@pytest.mark.parametrize("name", ["make", "INSTANCE", "tnn"])
def test_model_spec_accepts_factories_instances_and_imports(model_file: Path, name: str) -> None:
    assert parse_model_spec(f"{model_file}:{name}").name == name


@pytest.mark.parametrize(
    "text, message",
    [
        ("net.py", "is not PATH.py:NAME"),
        ("{file}:", "is not PATH.py:NAME"),
        ("{file}:Ne t", "is not a Python name"),
        ("missing.py:Net", "does not exist"),
        ("{file}:Nett", "defines no 'Nett'; it defines INSTANCE, Net"),
    ],
)
def test_model_spec_errors_are_one_clear_line(model_file: Path, text: str, message: str) -> None:
    with pytest.raises(UserError) as exc:
        parse_model_spec(text.format(file=model_file))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_model_spec_rejects_non_python_and_bad_kwargs(tmp_path: Path, model_file: Path) -> None:
    other = tmp_path / "net.txt"
    other.write_text("x")
    with pytest.raises(UserError, match="not a .py file"):
        parse_model_spec(f"{other}:Net")
    with pytest.raises(UserError, match="not valid JSON"):
        parse_model_spec(f"{model_file}:Net", "{depth: 4}")
    with pytest.raises(UserError, match="JSON object"):
        parse_model_spec(f"{model_file}:Net", "[1, 2]")


def test_model_spec_reports_syntax_errors_with_line(tmp_path: Path) -> None:
    f = tmp_path / "broken.py"
    f.write_text("class Net(:\n    pass\n")
    with pytest.raises(UserError, match=r"broken.py:1: syntax error"):
        parse_model_spec(f"{f}:Net")


def test_star_imports_skip_the_name_check(tmp_path: Path) -> None:
    f = tmp_path / "star.py"
    f.write_text("from os.path import *\n")
    assert parse_model_spec(f"{f}:Anything").name == "Anything"


def test_names_bound_under_if_and_try_count(tmp_path: Path) -> None:
    f = tmp_path / "cond.py"
    f.write_text("try:\n    from a import Net\nexcept ImportError:\n    class Net: pass\nif True:\n    Other = 1\n")
    assert parse_model_spec(f"{f}:Net").name == "Net"
    assert parse_model_spec(f"{f}:Other").name == "Other"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("x=B,3,H,W", InputSpec("x", ("B", 3, "H", "W"))),
        ("ids=B,T:int64:0:1000", InputSpec("ids", ("B", "T"), "int64", 0.0, 1000.0)),
        ("m=B,T:bool", InputSpec("m", ("B", "T"), "bool")),
        ("h=2,8:fp16", InputSpec("h", (2, 8), "float16")),
        ("z=B:float32:-1:1", InputSpec("z", ("B",), "float32", -1.0, 1.0)),
    ],
)
def test_input_grammar(text: str, expected: InputSpec) -> None:
    assert parse_input(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("x", "is not NAME=DIMS"),
        ("=B,3", "is not NAME=DIMS"),
        ("x=B,3.5", "neither a whole number nor a symbol"),
        ("x=B,3:int99", "unknown dtype"),
        ("x=B:int64:5", "expected DIMS"),
        ("x=B:int64:a:b", "must be numbers"),
        ("x=B:int64:10:1", "LOW must be below HIGH"),
        ("x=B:bool:0:1", "takes no LOW:HIGH"),
    ],
)
def test_input_grammar_errors(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_input(text)


def test_input_spec_round_trips_through_its_text() -> None:
    for text in ("x=B,3,H,W", "ids=B,T:int64:0:1000", "m=B:bool"):
        assert str(parse_input(text)) == text


def test_dims() -> None:
    assert parse_dim("B=1:16") == ("B", (1, 16))
    assert parse_dim("H=32") == ("H", (32, 32))
    for bad in ("B", "B=0:4", "B=8:4", "B=a:b", "1=2:3"):
        with pytest.raises(UserError):
            parse_dim(bad)


def test_plan_defaults_and_shared_symbols() -> None:
    plan = build_input_plan(["x=B,3,H,W", "mask=B,H,W:bool"], ["H=32:64"])
    assert plan.dims == {"B": (1, 16), "H": (32, 64), "W": (5, 100)}
    assert plan.dynamic_symbols == ("B", "H", "W")
    fixed = build_input_plan(["x=B,3"], ["B=4"])
    assert fixed.dynamic_symbols == ()


def test_plan_errors() -> None:
    with pytest.raises(UserError, match="no inputs given"):
        build_input_plan([], [])
    with pytest.raises(UserError, match="given twice"):
        build_input_plan(["x=B", "x=B"], [])
    with pytest.raises(UserError, match="no --input uses that symbol"):
        build_input_plan(["x=B,3"], ["T=1:4"])


def test_plan_with_inputs_hook_needs_no_inputs(tmp_path: Path) -> None:
    f = tmp_path / "hooked.py"
    f.write_text("class Net: pass\ndef bisector_inputs(dims, rng):\n    return ()\n")
    spec = parse_model_spec(f"{f}:Net")
    plan = build_input_plan([], ["T=4:32"], spec)
    assert plan.use_hook and plan.dims == {"T": (4, 32)}
