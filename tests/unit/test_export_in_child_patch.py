"""The export-in-a-child workaround as a patch (export_script.py, new_file.py): the script's
torch.onnx.export call wrapped in a helper whose comment names the upstream bug; written once."""

from __future__ import annotations

from bisector.model.spec import ModelSpec
from bisector.patching.export_script import patch_export_script
from bisector.patching.new_file import new_export_file
from bisector.patching.settings import Settings

SCRIPT = """import torch
from scripted import make

model = make()
for i in range(100):
    torch.onnx.export(model, (torch.randn(4, 256),), "model.onnx", dynamo=False)
"""
BUG = "pytorch/pytorch#82532 (TorchScript export of a scripted module keeps its cloned parameters)"


def test_the_export_call_runs_in_a_child_and_the_comment_names_the_bug(tmp_path) -> None:
    script = tmp_path / "export.py"
    script.write_text(SCRIPT)
    settings = Settings.from_probes([{"export_in_child": BUG}])
    assert settings.export_related
    patch, notes = patch_export_script(str(script), settings, None, str(tmp_path), key="model")
    after = patch.after
    assert notes == []
    assert (
        '_bisector_export_in_child(torch.onnx.export, model, (torch.randn(4, 256),), "model.onnx", dynamo=False)'
        in after
    )
    assert "def _bisector_export_in_child(export, *args, **kwargs):" in after
    assert "works around pytorch/pytorch#82532" in after and "get_context('fork')" in after
    assert max(len(line) for line in after.splitlines()) <= 120
    compile(after, "export.py", "exec")
    # Patched again (a second model, a second run): nothing more to write.
    script.write_text(after)
    again, notes = patch_export_script(str(script), settings, None, str(tmp_path), key="model")
    assert again.after == after and notes == []


def test_the_new_export_file_exports_in_a_child(tmp_path) -> None:
    text = new_export_file(
        str(tmp_path), ModelSpec(str(tmp_path / "net.py"), "Net"), None, Settings(export_in_child=BUG)
    )
    assert "_bisector_export_in_child(torch.onnx.export, model, example, path" in text.after
    compile(text.after, "export_onnx.py", "exec")
