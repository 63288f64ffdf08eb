from __future__ import annotations

from pathlib import Path

import pytest

from bisector import api
from bisector.common.errors import UserError


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.py").write_text("class Net: pass\nclass Other: pass\n")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.bisector]\ninputs = ["x=B,3,H,W"]\ndims = ["B=1:4"]\nstages = ["eager"]\nnoise_rss = "8MB"\n'
        '[[tool.bisector.models]]\nspec = "models/net.py:Other"\ninputs = ["ids=B,T:int64:0:50"]\n'
        'exporter = "torchscript"\n'
    )
    return tmp_path


def test_defaults_come_from_the_nearest_pyproject(project: Path) -> None:
    p = api.prepare(str(project / "models" / "net.py") + ":Net")
    assert [str(i) for i in p.plan.inputs] == ["x=B,3,H,W"]
    assert p.plan.dims["B"] == (1, 4)
    assert p.options.stages == ("eager",)
    assert p.options.bands.rss == 8_000_000


def test_per_model_entries_override_the_table(project: Path) -> None:
    p = api.prepare(str(project / "models" / "net.py") + ":Other")
    assert [str(i) for i in p.plan.inputs] == ["ids=B,T:int64:0:50"]
    assert p.options.probe.exporter == "torchscript"


def test_arguments_win_over_the_config(project: Path) -> None:
    p = api.prepare(str(project / "models" / "net.py") + ":Net", ["y=B,8"], stages=["export"], noise_rss="1MB")
    assert [str(i) for i in p.plan.inputs] == ["y=B,8"]
    assert p.options.stages == ("export",)
    assert p.options.bands.rss == 1_000_000


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stages": ["compile"]}, "unknown stage"),
        ({"exporter": "onnxmltools"}, "unknown exporter"),
        ({"device": "tpu"}, "unknown device"),
        ({"noise_rss": "lots"}, "is not a size"),
        ({"jobs": 0}, "--jobs"),
        ({"timeout_s": -1}, "--timeout"),
        ({"metric": "vms"}, "unknown metric"),
    ],
)
def test_bad_options_are_user_errors(project: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        api.prepare(str(project / "models" / "net.py") + ":Net", **kwargs)


def test_broken_pyproject_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text("class Net: pass\n")
    (tmp_path / "pyproject.toml").write_text("[tool.bisector\n")
    with pytest.raises(UserError, match="cannot read"):
        api.prepare(str(tmp_path / "net.py") + ":Net", ["x=B"])
