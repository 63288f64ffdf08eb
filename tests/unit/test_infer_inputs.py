"""Input inference, parent side (bisector.find.infer_inputs, api.prepare): no torch, the child faked."""

from __future__ import annotations

from typing import Any

import pytest

from bisector import api
from bisector.common.errors import UserError
from bisector.find import infer_inputs
from bisector.find.infer_inputs import Inferred
from bisector.model.spec import ModelSpec
from tests.conftest import FIXTURES, SAMPLES

MODEL = ModelSpec(path=str(SAMPLES / "clean_cnn.py"), name="Net")


def fake_child(monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any]) -> list[dict[str, Any]]:
    """Replace the child with a canned answer; returns the requests it got."""
    calls: list[dict[str, Any]] = []

    def run(
        model: ModelSpec, given: dict[str, tuple[int, int]], timeout_s: float, mem_cap: int | None = None
    ) -> dict[str, Any]:
        calls.append({"model": model, "given": given, "timeout_s": timeout_s})
        return answer

    monkeypatch.setattr(infer_inputs, "_run_child", run)
    return calls


def test_flags_to_copy_and_the_line_the_cli_prints() -> None:
    found = Inferred(inputs=("x=B,3,H,W",), dims=("H=32:100", "W=32:100"), source="stem: Conv2d(3, 16)")
    assert found.as_flags() == "--input x=B,3,H,W --dim H=32:100 --dim W=32:100"
    flags = "--input x=B,3,H,W --dim H=32:100 --dim W=32:100"
    assert found.describe() == f"inputs inferred: {flags} (from stem: Conv2d(3, 16))"
    assert found.to_json() == {
        "inputs": ["x=B,3,H,W"],
        "dims": ["H=32:100", "W=32:100"],
        "source": "stem: Conv2d(3, 16)",
    }


def test_only_ranges_the_defaults_do_not_give_become_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_child(
        monkeypatch,
        {
            "inputs": ["x=B,3,H,W"],
            "source": "stem: Conv2d(3, 16)",
            "dims": {"B": [1, 16], "H": [16, 16], "W": [5, 100]},
            "tried": [],
        },
    )
    found = infer_inputs.infer(MODEL)
    assert found.inputs == ("x=B,3,H,W",)
    assert found.dims == ("H=16",)  # B and W are at their defaults; a fixed size is written N


def test_the_users_dims_go_to_the_child_and_are_not_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = {"inputs": ["x=B,3,H,W"], "source": "s", "dims": {"B": [1, 2], "H": [8, 9], "W": [8, 9]}}
    calls = fake_child(monkeypatch, answer)
    found = infer_inputs.infer(MODEL, ["B=1:2"], timeout_s=7)
    assert calls == [{"model": MODEL, "given": {"B": (1, 2)}, "timeout_s": 7}]
    assert found.dims == ("H=8:9", "W=8:9")


def test_nothing_inferred_lists_every_source_tried_and_the_grammar(monkeypatch: pytest.MonkeyPatch) -> None:
    tried = ["example_inputs/dummy_input: Net has neither", "first layer: forward takes 2 inputs (x, y)"]
    fake_child(monkeypatch, {"inputs": [], "tried": tried})
    with pytest.raises(UserError) as caught:
        infer_inputs.infer(MODEL)
    text = str(caught.value)
    assert text.startswith("no inputs given, and none could be inferred (tried: ")
    for said in (
        "bisector_inputs hook: none in clean_cnn.py",
        "[tool.bisector] inputs: none",
        "example_inputs/dummy_input: Net has neither",
        "first layer: forward takes 2 inputs (x, y)",
        "--input NAME=DIMS[:DTYPE[:LOW:HIGH]]",
        "--input x=B,3,H,W",
        "bisector_inputs(dims, rng)",
    ):
        assert said in text
    assert "\n" not in text and caught.value.exit_code == 2


def test_a_child_that_failed_is_one_error_with_its_detail(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_child(monkeypatch, {"error": "the child that builds the model crashed (signal 6)", "detail": "Fatal"})
    said = r"^no inputs given, and inferring them failed: the child .* crashed \(signal 6\); add --input"
    with pytest.raises(UserError, match=said) as caught:
        infer_inputs.infer(MODEL)
    assert caught.value.detail == "Fatal"


def test_prepare_infers_only_when_no_inputs_came(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = {"inputs": ["x=B,3,H,W"], "source": "features.0: Conv2d(3, 8)", "dims": {"H": [8, 100], "W": [8, 100]}}
    calls = fake_child(monkeypatch, answer)
    p = api.prepare(f"{SAMPLES / 'clean_cnn.py'}:Net", dims=["B=1:4"], timeout_s=9)
    assert p.inferred == Inferred(inputs=("x=B,3,H,W",), dims=("H=8:100", "W=8:100"), source="features.0: Conv2d(3, 8)")
    assert [i.name for i in p.plan.inputs] == ["x"] and p.plan.dims == {"B": (1, 4), "H": (8, 100), "W": (8, 100)}
    assert calls[0]["given"] == {"B": (1, 4)} and calls[0]["timeout_s"] == 9
    given = api.prepare(f"{SAMPLES / 'clean_cnn.py'}:Net", ["x=B,3,H,W"])
    assert given.inferred is None and len(calls) == 1


def test_a_hook_or_config_wins_over_inference(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    calls = fake_child(monkeypatch, {"inputs": ["x=B,8"], "source": "fc: Linear(8, 8)"})
    hooked = api.prepare(f"{FIXTURES / 'hooked.py'}:Masked", dims=["B=1:2"])
    assert hooked.plan.use_hook and hooked.inferred is None
    (tmp_path / "model.py").write_text((FIXTURES / "crashers.py").read_text())
    (tmp_path / "pyproject.toml").write_text('[tool.bisector]\ninputs = ["x=B,8"]\n')
    configured = api.prepare(f"{tmp_path / 'model.py'}:Fine")
    assert configured.inferred is None and str(configured.plan.inputs[0]) == "x=B,8"
    assert calls == []


def test_cheap_mistakes_are_reported_before_any_child_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_child(monkeypatch, {"inputs": ["x=B,8"], "source": "fc"})
    with pytest.raises(UserError, match="unknown stage"):
        api.prepare(f"{SAMPLES / 'clean_cnn.py'}:Net", stages=["bogus"])
    with pytest.raises(UserError, match="--dim"):
        api.prepare(f"{SAMPLES / 'clean_cnn.py'}:Net", dims=["H=9:1"])
    assert calls == []
