"""repairs/: a result travels as JSON (a kept <name>.json, a summary row, a Ray task's answer) and
comes back the same through one ModelResult.from_json; repair proves its patches against one
reference run of the project's check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bisector.fix import project_check
from bisector.fix.project_check import Prover
from bisector.patching.diff import Patch
from bisector.repairs.manifest import ModelEntry
from bisector.repairs.results import ModelResult
from bisector.repairs.resume import load_done, save_done

ROW = ModelResult(
    "net",
    "models/net.py:Net",
    "fixed",
    verdict="leak",
    culprits=({"region": "head", "stage": "eager", "kind": "leak"},),
    kept=({"fixer": "bounded-containers"},),
    patch="out/patches/models__net.py.patch",
    wall_s=1.5,
    probes=7,
    stages={"eager": "leak"},
    patches=("models__net.py.patch",),
    check="passed",
    stage_errors={"export": "error: no exporter"},
    ceilings={"eager": [{"ceiling_bytes": 1.0}]},
    budget=2e9,
    timings={"find": 1.0},
)


def test_a_result_comes_back_from_its_json_as_it_was() -> None:
    assert ModelResult.from_json(json.loads(json.dumps(ROW.to_json()))) == ROW


def test_a_result_of_an_unknown_shape_is_no_result(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        ModelResult.from_json({**ROW.to_json(), "from_the_future": 1})
    entry = ModelEntry(spec=str(tmp_path / "net.py") + ":Net", options={}, base=str(tmp_path), label="net.py:Net")
    save_done(entry, tmp_path, "k1", ROW, None)
    (kept, work) = load_done(entry, tmp_path, "k1")
    # Patches and the check are composed and proven again over every model: not kept.
    assert kept == ModelResult.from_json({**ROW.to_json(), "patches": [], "check": ""}) and work is None
    assert load_done(entry, tmp_path, "another key") is None
    data = json.loads((tmp_path / f"{entry.name}.json").read_text())
    data["result"]["from_the_future"] = 1
    (tmp_path / f"{entry.name}.json").write_text(json.dumps(data))
    assert load_done(entry, tmp_path, "k1") is None  # rerun, never a crash


def test_the_prover_runs_the_reference_check_once(monkeypatch, tmp_path: Path) -> None:
    calls = []

    def run_check(root, command, patches, timeout=0.0):
        calls.append(len(list(patches)))
        return (False, "exited 3") if not calls[-1] else (True, "")

    monkeypatch.setattr(project_check, "run_check", run_check)
    path = tmp_path / "serve.py"
    path.write_text("print(1)\n")
    patch = Patch(str(path), "print(1)\n", "print(2)\n", "settings", str(tmp_path))
    prover = Prover(tmp_path, "python serve.py", what="the patches")
    for _ in range(3):
        assert prover([patch]) == (True, "not proven: `python serve.py` fails without the patches too (exited 3)")
    assert calls == [0]  # the reference, once; a check that fails without the patches proves nothing
    broken = Patch(str(path), "print(1)\n", "def broken(:\n", "settings", str(tmp_path))
    ok, state = prover([broken])
    assert not ok and state.startswith("failed: serve.py does not compile")
