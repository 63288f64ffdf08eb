"""A manifest entry's options reach the model's run (issue 23, item 1): its floor, fail_on and
budget, and the config file repair was given (not the pyproject nearest the model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bisector.common.errors import UserError
from bisector.pipeline import run as pipeline
from bisector.pipeline.prepare import parse_floors
from bisector.repairs.manifest import load_models
from bisector.repairs.one import RepairSettings, repair_one

MODEL = "import torch\n\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x\n"


def seen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, entries: list) -> tuple:
    """The Prepared and FixRequest that repair_one hands the pipeline for the only entry."""
    got = []

    def fix(prepared, request, **_):
        got.append((prepared, request))
        raise UserError("stopped here: the test only looks at what reached the pipeline")

    monkeypatch.setattr(pipeline, "fix", fix)
    (entry,) = entries
    result, _ = repair_one(entry, RepairSettings(), pool=None, probes=None, run_dir=tmp_path / "run", jobs=1)
    assert result.error.startswith("stopped here"), result.error
    return got[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "models").mkdir(parents=True)
    (root / "models" / "net.py").write_text(MODEL)
    # The pyproject nearest the model: what the model's run used to read instead of what it was given.
    (root / "models" / "pyproject.toml").write_text(
        '[tool.bisector]\nfloor = "900KB"\ncheck = "python near.py"\nseed = 11\n'
    )
    (root / "pyproject.toml").write_text('[project]\nname = "proj"\n')
    return root


def test_a_manifest_entrys_floor_fail_on_and_budget_reach_the_run(monkeypatch, project: Path, tmp_path) -> None:
    manifest = project / "models.toml"
    manifest.write_text(
        '[[models]]\nspec = "models/net.py:Net"\ninputs = ["x=B,4"]\ndims = ["B=1:4"]\nstages = ["eager"]\n'
        'floor = "3KB"\nfail_on = ["leak"]\nbudget = "1GB"\n'
    )
    prepared, request = seen(monkeypatch, tmp_path, load_models(manifest=str(manifest)))
    assert prepared.options.floor_targets == parse_floors(["3KB"], ("eager",))
    assert request.fail_on.kinds == frozenset({"leak"}) and request.fail_on.budget == 1e9


def test_the_config_repair_was_given_is_the_models_config(monkeypatch, project: Path, tmp_path) -> None:
    given = project / "ci.toml"
    given.write_text(
        '[tool.bisector]\ncheck = "python ci.py"\nfloor = ["eager=2KB"]\nbudget = "3GB"\n'
        '[[tool.bisector.models]]\nspec = "models/net.py:Net"\ninputs = ["x=B,4"]\nstages = ["eager"]\n'
    )
    prepared, request = seen(monkeypatch, tmp_path, load_models(config=str(given)))
    assert prepared.given.config == str(given.resolve())
    assert prepared.config.get("check") == "python ci.py" and "seed" not in prepared.config
    assert prepared.options.seed == 0  # not the nearer pyproject's 11
    assert prepared.options.floor_targets == parse_floors(["eager=2KB"], ("eager",))
    assert request.fail_on.budget == 3e9
