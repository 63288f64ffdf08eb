"""A project with its own ``fixers`` package (issue #11): bisector's fixers install as
``bisector.fixers``, so neither package shadows the other, in the CLI's process (``python -m``
puts the working folder first on sys.path) nor in the probes (which put the model's folder first
before registering a fixer's symbolics)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, run_cli

PROJECT_FIXERS = '''"""The project's own helpers, in a package named like bisector's fixers."""

SCALE = 1.0
BUILTIN = ("not.bisector.fixers",)


def register(operators):
    raise RuntimeError("the project's fixers package, not bisector's")
'''


def project(tmp_path: Path) -> Path:
    """tests/fixtures/operators.py's model, beside a fixers package of its own that it imports."""
    root = tmp_path / "proj"
    (root / "fixers").mkdir(parents=True)
    (root / "fixers" / "__init__.py").write_text(PROJECT_FIXERS)
    (root / "fixers" / "onnx_symbolics.py").write_text("raise ImportError(\"the project's module, not bisector's\")\n")
    model = (FIXTURES / "operators.py").read_text()
    model = model.replace("from torch import nn\n", "from torch import nn\n\nfrom fixers import SCALE\n", 1)
    model = model.replace("return self.proj(x) +", "return SCALE * self.proj(x) +", 1)
    assert "SCALE * self.proj" in model
    (root / "model.py").write_text(model)
    return root


def test_bisector_fixers_import_with_a_projects_fixers_package_first_on_the_path(tmp_path) -> None:
    root = project(tmp_path)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import fixers\n"
        "from bisector.fixers import all_fixers\n"
        "from bisector.fixers.onnx_symbolics import SYMBOLICS\n"
        "assert fixers.SCALE == 1.0 and 'aten::diff' in SYMBOLICS\n"
        "print(len(all_fixers()))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(root)], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) >= 9


# Run from the project, the CLI's own imports meet its fixers package; from elsewhere, only the
# probes do (with bisector's fixers imported first, the model's `from fixers import` broke).
@pytest.mark.probe
@pytest.mark.parametrize("where", ["project", "elsewhere"])
def test_fix_works_on_a_model_whose_folder_has_its_own_fixers_package(tmp_path, where) -> None:
    root = project(tmp_path)
    small = ["-i", "x=B,T,8", "-d", "B=1:3", "-d", "T=5:24", "-s", "export", "--exporter", "torchscript"]
    r = run_cli(
        "fix",
        f"{root / 'model.py'}:PositionsFromMask",
        *small,
        "--fixer",
        "missing-symbolic",
        "--json",
        "--run-dir",
        str(tmp_path / "run"),
        cwd=root if where == "project" else tmp_path,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    kept = [f for f in data["fixes"] if f["kept"]]
    # The probes registered bisector's symbolics, not the project's register() (which raises).
    assert any("aten::diff, aten::cumsum" in f["summary"] for f in kept), data["fixes"]
    assert all(f["equivalent"] for f in kept)
