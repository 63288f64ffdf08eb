"""`bisector find` names what holds a culprit's growth (issue 20, item 1): a forward that registers
a hook on a child module on every call is held by the child's `_forward_hooks`, registered at the
`register_forward_hook(` line; the terminal, the JSON and the hint say so."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FIXTURES, run_cli

pytestmark = pytest.mark.probe


def registration_line() -> int:
    lines = (FIXTURES / "hook_per_call.py").read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if "self.conv1.register_forward_hook(" in text)


def test_find_names_the_hook_dict_and_the_registration_line(tmp_path) -> None:
    args = (
        "find",
        f"{FIXTURES / 'hook_per_call.py'}:Net",
        "-i",
        "x=B,4,T",
        "-s",
        "eager",
        "--run-dir",
        str(tmp_path),
    )
    r = run_cli(*args, "--json")  # checked against the schema by run_cli
    assert r.returncode == 1, r.stderr
    (culprit,) = json.loads(r.stdout)["culprits"]
    assert culprit["region"] == "encoder"
    top = culprit["retention"][0]
    where = f"tests/fixtures/hook_per_call.py:{registration_line()}"
    assert (top["root"], top["path"], top["container"]) == ("hooks", "encoder.conv1._forward_hooks", "OrderedDict")
    assert top["entries_per_call"] == 1.0 and top["mutated_at"] == [where]
    assert top["attr"] == "_forward_hooks" and top["qualname"] == "Conv1d"
    assert "encoder.conv1._forward_hooks" in culprit["hint"] and where in culprit["hint"]
    assert "containers that only grow" not in culprit["hint"]
    text = run_cli(*args)  # the terminal, from the same run directory
    assert "held by encoder.conv1._forward_hooks" in " ".join(text.stdout.split())
