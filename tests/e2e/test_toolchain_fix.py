"""A toolchain-leak gets workarounds measured like any fix: pytorch/pytorch#82532 (a scripted
module exported with the TorchScript exporter) is torch's, named at torch's line, and exporting
in a child process keeps the exporting process flat; the patch wraps the script's export call."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import SAMPLES, run_cli

pytestmark = pytest.mark.probe

SCRIPT = """import sys

import torch

from scripted import make

model = make()
x = torch.randn(4, 256)
for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
    torch.onnx.export(model, (x,), "model.onnx", dynamo=False)
"""


def test_scripted_export_is_torchs_and_exporting_in_a_child_is_kept_and_patched(tmp_path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    shutil.copyfile(SAMPLES / "jit_scripted.py", proj / "scripted.py")
    (proj / "export.py").write_text(SCRIPT)
    args = ["scripted.py:make", "-i", "x=B,256", "--dim", "B=1:8", "--exporter", "torchscript", "-s", "export"]
    r = run_cli(
        "fix", *args, "--export-script", "export.py", "--fixer", "export-in-child", "--run-dir", str(tmp_path / "run"),
        "--diff", cwd=proj,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # Item 2: torch's, at torch's line, with the model's share; the advice is not about the model's code.
    assert "toolchain-leak" in out and "torchscript_exporter/utils.py:972" in out, out
    assert "the model's code keeps 0 B and 0 objects/export" in out
    assert "custom symbolic function" not in out and "pytorch/pytorch#82532" in out
    # Item 3: the workaround is kept because the exporting process went flat; the patch names the bug.
    assert "✓ export-in-child" in out and "clean after the fix" in out, out
    assert "_bisector_export_in_child(torch.onnx.export, model, (x,)" in out
    assert "works around pytorch/pytorch#82532" in out
    # The patch applies to the script, and the patched script still exports.
    diff = out[out.index("diff --git") :]
    diff = diff[: diff.index("\ncheck:") + 1] if "\ncheck:" in diff else diff
    subprocess.run(["git", "apply", "-"], input=diff, text=True, cwd=proj, check=True)
    ran = subprocess.run([sys.executable, "export.py", "2"], cwd=proj, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert (proj / "model.onnx").stat().st_size > 256 * 256 * 4
