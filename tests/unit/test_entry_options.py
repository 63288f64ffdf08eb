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


def test_the_config_given_beside_a_manifest_is_each_models_config(monkeypatch, project: Path, tmp_path) -> None:
    # `repair --config ci.toml --manifest models.toml`: the config's [tool.bisector] gives the
    # defaults (floor, fail_on, budget, check, seed) under the manifest's own, and each model's
    # run reads it rather than the pyproject nearest the model (models/pyproject.toml: seed 11).
    given = project / "ci.toml"
    given.write_text(
        '[tool.bisector]\ncheck = "python ci.py"\nseed = 5\nfloor = ["eager=2KB"]\nfail_on = ["leak"]\n'
        'budget = "3GB"\nretries = 4\n'
    )
    manifest = project / "models.toml"
    manifest.write_text('retries = 1\n[[models]]\nspec = "models/net.py:Net"\ninputs = ["x=B,4"]\nstages = ["eager"]\n')
    (entry,) = load_models(config=str(given), manifest=str(manifest))
    assert entry.options["check"] == "python ci.py"  # what write_patches proves the patches with
    prepared, request = seen(monkeypatch, tmp_path, [entry])
    assert prepared.given.config == str(given.resolve())
    assert prepared.config.get("check") == "python ci.py"
    assert prepared.options.seed == 5  # not the nearer pyproject's 11
    assert prepared.options.retries == 1  # the manifest's own default wins over the config's
    assert prepared.options.floor_targets == parse_floors(["eager=2KB"], ("eager",))
    assert request.fail_on.kinds == frozenset({"leak"}) and request.fail_on.budget == 3e9


def test_a_config_without_a_table_beside_a_manifest_still_replaces_the_nearest_pyproject(
    monkeypatch, project: Path, tmp_path
) -> None:
    given = project / "empty.toml"
    given.write_text('[project]\nname = "other"\n')
    manifest = project / "models.toml"
    manifest.write_text('[[models]]\nspec = "models/net.py:Net"\ninputs = ["x=B,4"]\nstages = ["eager"]\n')
    prepared, _ = seen(monkeypatch, tmp_path, load_models(config=str(given), manifest=str(manifest)))
    assert prepared.options.seed == 0 and "floor" not in prepared.config  # nothing of models/pyproject.toml
    with pytest.raises(UserError, match="does not exist"):
        load_models(config=str(project / "missing.toml"), manifest=str(manifest))


def test_entry_keys_written_as_one_string_or_a_table_reach_the_run(monkeypatch, project: Path, tmp_path) -> None:
    # The schema takes inputs, stages, fixers and floor as one string or a list, and dims as a
    # table too: each reaches the run as the list it stands for (one string used to become its letters).
    manifest = project / "models.toml"
    manifest.write_text(
        '[[models]]\nspec = "models/net.py:Net"\ninputs = "x=B,4"\nstages = "eager"\nfixers = "bounded-containers"\n'
        'floor = "3KB"\n[models.dims]\nB = "1:6"\n'
    )
    prepared, request = seen(monkeypatch, tmp_path, load_models(manifest=str(manifest)))
    assert [i.name for i in prepared.plan.inputs] == ["x"]
    assert dict(prepared.plan.dims) == {"B": (1, 6)}
    assert prepared.options.stages == ("eager",)
    assert prepared.options.floor_targets == parse_floors(["3KB"], ("eager",))
    assert request.fixers == ("bounded-containers",)


def test_the_apis_fail_on_budget_and_config_reach_each_models_run(monkeypatch, project: Path, tmp_path) -> None:
    # api.repair (the CLI's repair calls it): --fail-on and --budget override every entry's, and
    # --config beside --manifest is each model's config.
    from bisector import api

    given = project / "ci.toml"
    given.write_text('[tool.bisector]\nseed = 5\nfail_on = ["leak"]\nbudget = "3GB"\n')
    manifest = project / "models.toml"
    manifest.write_text('[[models]]\nspec = "models/net.py:Net"\ninputs = ["x=B,4"]\nstages = ["eager"]\n')
    handed = []
    monkeypatch.setattr(api, "_repair", lambda models, *a, **k: handed.append(list(models)))
    api.repair(
        config=str(given),
        manifest=str(manifest),
        out=str(tmp_path / "out"),
        fail_on="shape-growth:unbounded",
        budget="1GB",
    )
    prepared, request = seen(monkeypatch, tmp_path, handed[0])
    assert prepared.options.seed == 5 and prepared.given.config == str(given.resolve())
    assert request.fail_on.kinds == frozenset({"shape-growth:unbounded"}) and request.fail_on.budget == 1e9
