"""ONNX Runtime as an extra (issue 13, item 2): at start-up a missing runtime is one clear line
(an error when the inference stage needs it), and two that overwrite each other a warning."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pytest

from bisector.options.runtime_check import (
    clobbering,
    installed_runtimes,
    named_stages_problem,
    runtime_problem,
    stages_problem,
)

SITE = "/venv/lib/python3.11/site-packages"


@dataclass
class FakeDist:
    """What runtime_check reads of an importlib.metadata distribution."""

    name: str
    version: str = "1.20.0"
    top_level: str | None = "onnxruntime"
    location: str = SITE
    files: list[PurePosixPath] = field(default_factory=list)

    @property
    def metadata(self) -> dict[str, str]:
        return {"Name": self.name}

    def read_text(self, filename: str) -> str | None:
        return self.top_level if filename == "top_level.txt" else None

    def locate_file(self, path: str) -> str:
        return self.location


CPU, GPU = FakeDist("onnxruntime"), FakeDist("onnxruntime-gpu", "1.31.1")


def test_runtimes_are_the_distributions_that_install_the_module() -> None:
    dists = [
        CPU,
        FakeDist("onnxruntime_extensions", top_level="onnxruntime_extensions"),
        FakeDist("onnx", top_level="onnx"),
        FakeDist("onnxruntime-genai", top_level=None, files=[PurePosixPath("onnxruntime_genai/__init__.py")]),
        FakeDist("onnxruntime-openvino", top_level=None, files=[PurePosixPath("onnxruntime/__init__.py")]),
    ]
    assert [r.name for r in installed_runtimes(dists)] == ["onnxruntime", "onnxruntime-openvino"]


def test_a_distribution_seen_twice_on_the_path_counts_once() -> None:
    assert len(installed_runtimes([GPU, GPU])) == 1


def test_two_runtimes_in_one_site_folder_clobber_but_a_venvs_shadows_the_systems() -> None:
    assert [r.name for r in clobbering(installed_runtimes([CPU, GPU]))] == ["onnxruntime", "onnxruntime-gpu"]
    system = FakeDist("onnxruntime", location="/usr/lib/python3/dist-packages")
    assert clobbering(installed_runtimes([GPU, system])) == []


def test_one_runtime_is_fine_with_any_stage() -> None:
    assert runtime_problem(installed_runtimes([GPU]), needs_runtime=True) is None
    assert runtime_problem(installed_runtimes([CPU]), needs_runtime=None) is None


def test_no_runtime_is_an_error_only_where_inference_is_asked_for() -> None:
    line, fatal = runtime_problem([], needs_runtime=True)
    assert fatal and "no ONNX Runtime installed" in line and "bisector[cpu]" in line and "--stage eager" in line
    assert "\n" not in line
    assert runtime_problem([], needs_runtime=False) is None
    line, fatal = runtime_problem([], needs_runtime=None)  # repair: each model's entry decides
    assert not fatal and "no ONNX Runtime installed" in line


def test_two_runtimes_are_a_warning_naming_both() -> None:
    line, fatal = runtime_problem(installed_runtimes([CPU, GPU]), needs_runtime=True)
    assert not fatal and "\n" not in line
    assert "onnxruntime 1.20.0 and onnxruntime-gpu 1.31.1" in line
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in line


@pytest.mark.parametrize(
    ("stages", "dists", "want"),
    [
        ((), [], None),  # stages not named: decided after prepare
        (("eager",), [], None),
        (("eager", "export"), [], None),
        (("inference",), [], "error"),
        (("eager", "inference"), [], "error"),
        (None, [], "warning"),  # repair: each model's entry names its stages
        ((), [CPU, GPU], "warning"),
        ((), [GPU], None),
        (None, [GPU], None),
    ],
)
def test_which_named_stages_are_a_problem(
    stages: tuple[str, ...] | None, dists: list[FakeDist], want: str | None
) -> None:
    problem = named_stages_problem(stages, dists)
    assert (None if problem is None else "error" if problem[1] else "warning") == want


@pytest.mark.parametrize(
    "stage_args", [["--stage", "inference"], ["--stage=inference"], ["-sinference"], ["-s", "eager", "-s", "inference"]]
)
def test_the_cli_checks_the_stages_it_parsed(
    stage_args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bisector import cli
    from bisector.options import runtime_check

    monkeypatch.setattr(runtime_check, "installed_runtimes", lambda distributions=None: [])
    with pytest.raises(SystemExit) as exc:
        cli.main(["find", "nowhere.py:Net", "-i", "x=B,3", *stage_args])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: no ONNX Runtime installed")


@pytest.mark.parametrize(
    "argv", [["find", "m.py:Net", "-h"], ["find", "--help"], ["--version"], ["schema"], ["clean", "--help"], []]
)
def test_commands_that_need_no_runtime_say_nothing_of_it(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bisector import cli
    from bisector.options import runtime_check

    monkeypatch.setattr(runtime_check, "installed_runtimes", lambda distributions=None: installed_runtimes([CPU, GPU]))
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    assert "onnxruntime" not in capsys.readouterr().err


def test_repair_warns_of_a_missing_runtime_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    from bisector import cli
    from bisector.options import runtime_check

    monkeypatch.setattr(runtime_check, "installed_runtimes", lambda distributions=None: [])
    with pytest.raises(SystemExit) as exc:
        cli.main(["repair", "--manifest", str(tmp_path / "none.toml"), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2  # the missing manifest, after the warning
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("warning: no ONNX Runtime installed")
    assert "does not exist" in lines[1]


def test_the_cli_stops_with_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bisector import cli
    from bisector.options import runtime_check

    monkeypatch.setattr(runtime_check, "installed_runtimes", lambda distributions=None: [])
    with pytest.raises(SystemExit) as exc:
        cli.main(["measure", "nowhere.py:Net", "-i", "x=B,3", "--stage", "inference"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no ONNX Runtime installed") and err.count("\n") == 1


def test_the_cli_warns_once_and_goes_on(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from bisector import cli
    from bisector.options import runtime_check

    monkeypatch.setattr(runtime_check, "installed_runtimes", lambda distributions=None: installed_runtimes([CPU, GPU]))
    with pytest.raises(SystemExit) as exc:
        cli.main(["measure", "nowhere.py:Net", "-i", "x=B,3"])
    assert exc.value.code == 2  # the missing model file, after the warning
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("warning: onnxruntime 1.20.0 and onnxruntime-gpu 1.31.1 are both installed")
    assert "does not exist" in lines[1]


def test_this_environment_has_a_runtime_and_no_clash() -> None:
    """The suite's own environment: the Makefile installs one extra, so nothing is reported."""
    code = (
        "from bisector.options.runtime_check import installed_runtimes, clobbering\nr = installed_runtimes()\n"
        "assert len(r) >= 1 and not clobbering(r), r"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stages_named_only_by_the_environment_count(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bisector import cli
    from bisector.options import runtime_check

    monkeypatch.setattr(runtime_check, "installed_runtimes", lambda distributions=None: [])
    monkeypatch.setenv("BISECTOR_STAGE", "inference")
    with pytest.raises(SystemExit) as exc:
        cli.main(["find", "nowhere.py:Net", "-i", "x=B,3"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: no ONNX Runtime installed")


def test_once_prepared_the_stages_decide_whatever_gave_them() -> None:
    assert stages_problem(("eager", "export"), []) is None  # e.g. [tool.bisector] stages
    line = stages_problem(("eager", "inference"), [])
    assert line is not None and line.startswith("no ONNX Runtime installed")
    assert stages_problem(("inference",), [GPU]) is None
