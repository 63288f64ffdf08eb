"""Patches: unified diffs of the user's files, idempotent transforms, and a safe apply."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from bisector.common.errors import UserError
from bisector.common.source_text import read_source
from bisector.model.spec import ModelSpec, build_input_plan
from bisector.patching.apply import apply
from bisector.patching.diff import Patch, merge_edits, source_patches
from bisector.patching.export_script import patch_export_script
from bisector.patching.infer_script import patch_infer_script
from bisector.patching.new_file import new_export_file
from bisector.patching.settings import Settings

PLAN = build_input_plan(["x=B,3,H,W"], ["B=1:16", "H=5:100", "W=5:100"])

SERVE = '''"""Serve the model."""
import numpy as np
import onnxruntime as ort

# one session for the process
session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])


def predict(batch):
    return session.run(None, {"x": batch})[0]
'''

EXPORT = """import torch

from model import Net

model = Net().eval()
x = torch.randn(2, 3, 32, 32)
torch.onnx.export(model, (x,), "model.onnx", input_names=["x"])  # the one export
"""


def settings(**kw) -> Settings:
    base = dict(
        exporter=None,
        export_kwargs={},
        bounded_dims={},
        onnxsim=False,
        session_options={},
        provider_options={},
        run_options={},
        warmup_largest=False,
        round_multiple=0,
    )
    base.update(kw)
    return Settings(**base)


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_infer_script_gets_options_run_options_and_warm_up(tmp_path: Path) -> None:
    path = write(tmp_path, "serve.py", SERVE)
    s = settings(
        session_options={"enable_mem_pattern": False},
        run_options={"memory.enable_memory_arena_shrinkage": "cpu:0"},
        warmup_largest=True,
    )
    patch, notes = patch_infer_script(path, s, PLAN, str(tmp_path), key="model")
    after = patch.after
    ast.parse(after)
    assert notes == []
    # The settings live in a per-model table, looked up by the helpers at the session.
    assert (
        "'model': {'session_options': {'enable_mem_pattern': False}, 'run_options': "
        "{'memory.enable_memory_arena_shrinkage': 'cpu:0'}, 'warm_up_largest': [{0: 16, 2: 100, 3: 100}]}" in after
    )
    assert (
        '_bisector_session(ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"], '
        "sess_options=_bisector_session_options('model', None)), 'model')" in after
    )
    assert "options = ort.SessionOptions()" in after and "import onnxruntime\n" not in after  # the script's own alias
    assert "np.zeros(shape, dtype=dtypes.get(meta.type, np.float32))" in after and "import numpy\n" not in after
    assert "# one session for the process" in after and '"""Serve the model."""' in after  # comments kept
    assert patch.diff.startswith("diff --git a/serve.py b/serve.py\nindex ")
    # Idempotent: the patched file patches to itself.
    Path(path).write_text(after)
    again, _ = patch_infer_script(path, s, PLAN, str(tmp_path), key="model")
    assert not again.changed and again.diff == ""


def test_infer_script_padding_pads_varying_axes_and_crops_outputs(tmp_path: Path) -> None:
    path = write(tmp_path, "serve.py", SERVE)
    patch, _ = patch_infer_script(
        path,
        settings(round_multiple=16, run_options={"memory.enable_memory_arena_shrinkage": "cpu:0"}),
        PLAN,
        str(tmp_path),
    )
    assert '_bisector_run(session.run, None, {"x": batch}, 16)' in patch.after
    ast.parse(patch.after)
    # Run the generated helpers: only B, H and W are padded (channels stay 3), outputs come back cropped.
    import numpy

    helpers = patch.after[patch.after.index("_BISECTOR_DYNAMIC_AXES") : patch.after.index("# one session")]
    ns: dict = {"numpy": numpy}
    exec(helpers, ns)
    assert ns["_BISECTOR_DYNAMIC_AXES"] == {"x": {0: "B", 2: "H", 3: "W"}}
    seen = []

    def fake_run(names, feed, run_options=None):
        seen.append(feed["x"].shape)
        x = feed["x"]
        # a same-rank output, a (batch, classes) head, and a feature map whose 16 channels equal padded B
        return [
            x * 2,
            numpy.zeros((x.shape[0], 10), dtype=numpy.float32),
            numpy.zeros((x.shape[0], 16, 8, 8), dtype=numpy.float32),
        ]

    x = numpy.ones((3, 3, 21, 40), dtype=numpy.float32)
    outs = ns["_bisector_run"](fake_run, None, {"x": x}, 16, run_options="r")
    assert seen == [(16, 3, 32, 48)]
    assert outs[0].shape == (3, 3, 21, 40) and (outs[0] == 2).all()
    assert outs[1].shape == (3, 10)
    assert outs[2].shape == (3, 16, 8, 8)

    # A session that names its axes: (B, T) ids -> (B, T, V) logits, cropped on B and T only,
    # even though V (16) equals the padded size of T.
    class Meta:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Session:
        def get_inputs(self):
            return [Meta("x", ["B", 3, "H", "W"])]

        def get_outputs(self):
            return [Meta("logits", ["B", "H", 16]), Meta("pooled", [16, 16])]

        def run(self, names, feed):
            x = feed["x"]
            return [numpy.ones((x.shape[0], x.shape[2], 16)), numpy.ones((16, 16))]

    outs = ns["_bisector_run"](Session().run, None, {"x": numpy.ones((3, 3, 5, 7), dtype=numpy.float32)}, 16)
    assert outs[0].shape == (3, 5, 16) and outs[1].shape == (16, 16)


def test_export_script_gets_exporter_kwargs_and_an_onnxsim_step(tmp_path: Path) -> None:
    path = write(tmp_path, "export.py", EXPORT)
    s = settings(exporter="torchscript", export_kwargs={"do_constant_folding": True, "opset_version": 21}, onnxsim=True)
    patch, notes = patch_export_script(path, s, PLAN, str(tmp_path))
    after = patch.after
    ast.parse(after)
    assert (
        'torch.onnx.export(model, (x,), "model.onnx", input_names=["x"], dynamo=False, '
        "do_constant_folding=True, opset_version=21)" in after
    )
    assert '_bisector_model, _bisector_ok = onnxsim.simplify(onnx.load("model.onnx"))' in after
    assert "import onnxsim" in after and "# the one export" in after
    Path(path).write_text(after)
    again, _ = patch_export_script(path, s, PLAN, str(tmp_path))
    assert not again.changed


def test_bounded_dims_for_each_exporter(tmp_path: Path) -> None:
    path = write(tmp_path, "export.py", EXPORT)
    bounded = {"B": [1, 16], "H": [5, 100], "W": [5, 100]}
    dynamo, _ = patch_export_script(path, settings(exporter="dynamo", bounded_dims=bounded), PLAN, str(tmp_path))
    assert (
        "dynamic_shapes={'x': {0: torch.export.Dim('B', min=1, max=16), 2: torch.export.Dim('H', min=5, max=100)"
        in dynamo.after
    )
    ts, _ = patch_export_script(path, settings(exporter="torchscript", bounded_dims=bounded), PLAN, str(tmp_path))
    assert "dynamic_axes={'x': {0: 'B', 2: 'H', 3: 'W'}}" in ts.after
    # dynamic_axes names its inputs, so a call without input_names gets them
    bare = write(tmp_path, "bare.py", EXPORT.replace(', input_names=["x"]', ""))
    ts, _ = patch_export_script(bare, settings(exporter="torchscript", bounded_dims=bounded), PLAN, str(tmp_path))
    assert "input_names = ['x']" in ts.after.replace("input_names=", "input_names = ")


def test_bounded_dims_guard_the_feeds_of_the_inference_script(tmp_path: Path) -> None:
    import numpy

    path = write(tmp_path, "serve.py", SERVE)
    patch, _ = patch_infer_script(
        path, settings(bounded_dims={"B": [1, 16], "H": [5, 100], "W": [5, 100]}), PLAN, str(tmp_path)
    )
    assert 'session.run(None, _bisector_guard({"x": batch}))' in patch.after
    ns: dict = {"numpy": numpy}
    exec(patch.after[patch.after.index("_BISECTOR_DYNAMIC_AXES") : patch.after.index("# one session")], ns)
    ok = {"x": numpy.zeros((2, 3, 100, 5))}
    assert ns["_bisector_guard"](ok) is ok
    with pytest.raises(ValueError, match=r"input x axis 2 \(H\) = 101 is outside 5..100"):
        ns["_bisector_guard"]({"x": numpy.zeros((2, 3, 101, 5))})


def test_a_script_without_the_call_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, "other.py", "print('hello')\n")
    patch, notes = patch_infer_script(path, settings(warmup_largest=True), PLAN, str(tmp_path))
    assert not patch.changed and "no onnxruntime.InferenceSession(...) found" in notes[0]


def test_new_file_when_no_script_is_given(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    model_file = write(tmp_path / "models", "net.py", "class Net: pass\n")
    s = settings(session_options={"enable_mem_pattern": False}, warmup_largest=True, onnxsim=True)
    patch = new_export_file(str(tmp_path), ModelSpec(model_file, "Net"), PLAN, s)
    assert patch.before is None
    assert patch.diff.startswith("diff --git a/export_onnx.py b/export_onnx.py\nnew file mode 100644\nindex 0000000..")
    assert "--- /dev/null\n+++ b/export_onnx.py\n" in patch.diff
    ast.parse(patch.after)
    assert "from net import Net" in patch.after and "_bisector_warm_up(session)" in patch.after
    assert "options.enable_mem_pattern = False" in patch.after and "onnxsim.simplify" in patch.after
    rounded = new_export_file(
        str(tmp_path), ModelSpec(model_file, "Net"), PLAN, settings(round_multiple=16, bounded_dims={"B": [1, 16]})
    )
    ast.parse(rounded.after)
    assert (
        "def run(session, feed, names=None):" in rounded.after
        and "_bisector_run(session.run, names, feed, 16)" in rounded.after
    )
    assert "padded = _bisector_pad(_bisector_guard(feed), multiple)" in rounded.after


def test_edits_of_one_file_are_merged_when_they_do_not_overlap() -> None:
    before = "a = 1\nb = 2\nc = 3\nd = 4\n"
    merged, skipped = merge_edits(
        before, ["a = 1\nb = 20\nc = 3\nd = 4\n", "a = 1\nb = 2\nc = 3\nd = 40\n", "a = 1\nb = 21\nc = 3\nd = 4\n"]
    )
    assert merged == "a = 1\nb = 20\nc = 3\nd = 40\n" and skipped == [2]


def test_source_patches_diff_applies_with_git_apply(tmp_path: Path) -> None:
    from bisector.fixers.base import SourceEdit

    f = tmp_path / "m.py"
    f.write_text("x = 1\nKEPT.append(x)\ny = 2\n")
    (patch,), notes = source_patches(
        [SourceEdit(str(f), f.read_text(), "x = 1\ny = 2\n", "drop append")], str(tmp_path)
    )
    (tmp_path / "p.diff").write_text(patch.diff)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "apply", "p.diff"], cwd=tmp_path, check=True)
    assert f.read_text() == "x = 1\ny = 2\n"


def test_apply_writes_atomically_with_a_backup(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("old\n")
    written = apply([Patch(str(f), "old\n", "new\n", "s", str(tmp_path))], tmp_path)
    assert written == ["m.py"] and f.read_text() == "new\n"
    (backup,) = list((tmp_path / ".bisector" / "backups").rglob("m.py"))
    assert backup.read_text() == "old\n"


def test_apply_refuses_a_file_changed_since_analysis_and_writes_nothing(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("a\n")
    b.write_text("b changed by the user\n")
    patches = [Patch(str(a), "a\n", "A\n", "s", str(tmp_path)), Patch(str(b), "b\n", "B\n", "s", str(tmp_path))]
    with pytest.raises(UserError, match="b.py: it changed since bisector read it"):
        apply(patches, tmp_path)
    assert a.read_text() == "a\n"  # all or nothing


def test_apply_refuses_a_path_outside_the_project(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    outside = tmp_path / "elsewhere.py"
    outside.write_text("x\n")
    with pytest.raises(UserError, match="outside the project root"):
        apply([Patch(str(outside), "x\n", "y\n", "s", str(root))], root)
    assert outside.read_text() == "x\n"


def test_symbolics_are_registered_in_the_export_script(tmp_path: Path) -> None:
    path = write(tmp_path, "export.py", EXPORT)
    s = Settings.from_probes([{"export_kwargs": {"symbolics": ["aten::diff"]}}])
    assert s.symbolics == ("aten::diff",) and "symbolics" not in s.export_kwargs
    patch, _ = patch_export_script(path, s, PLAN, str(tmp_path))
    after = patch.after
    ast.parse(after)
    assert after.index("def bisector_diff_symbolic") < after.index(
        "torch.onnx.register_custom_op_symbolic('aten::diff'"
    )
    assert after.index("torch.onnx.register_custom_op_symbolic") < after.index("torch.onnx.export(")
    assert "symbolics=" not in after  # not an export keyword
    Path(path).write_text(after)
    again, _ = patch_export_script(path, s, PLAN, str(tmp_path))
    assert not again.changed


def test_the_scripts_own_input_names_key_the_dynamic_axes(tmp_path: Path) -> None:
    from bisector.patching.export_script import script_input_names

    path = write(tmp_path, "export.py", EXPORT.replace('input_names=["x"]', 'input_names=["pixels"]'))
    assert script_input_names(path) == ["pixels"]
    assert script_input_names(write(tmp_path, "none.py", "print(1)\n")) is None


# -- a file's own bytes: line endings, BOM, encoding (issue 19, item 6) --------------------------

# Each: the file's bytes, then what a fixer's edit (on the text Python reads) makes of it.
FILES = {
    "crlf": b"import os\r\nx = 1\r\nKEPT.append(x)\r\ny = 2\r\n",
    "bom": b"\xef\xbb\xbfimport os\nx = 1\nKEPT.append(x)\ny = 2\n",
    "bom-crlf": b"\xef\xbb\xbfimport os\r\nx = 1\r\nKEPT.append(x)\r\ny = 2\r\n",
    # CRLF is the dominant ending (3 to 2): an added line takes it, every kept line keeps its own
    "mixed": b"import os\r\nx = 1\nKEPT.append(x)\r\ny = 2\n# end\r\n",
    "no-final-newline": b"import os\r\nx = 1\r\nKEPT.append(x)\r\ny = 2",
    "latin-1": "# -*- coding: latin-1 -*-\r\n# café\r\nx = 1\r\nKEPT.append(x)\r\ny = 'é'\r\n".encode("latin-1"),
    "form-feed": b"import os\r\n\x0c\r\nx = 1\r\nKEPT.append(x)\r\ny = 2\r\n",
}


def _edit(text: str) -> str:
    """What a python-leaks fixer does: drop the append, add a line after the imports."""
    lines = [line for line in text.split("\n") if "KEPT" not in line]
    lines.insert(1, "import gc")
    return "\n".join(lines)


def _git_and_patch_apply(folder: Path, diff: bytes) -> None:
    (folder / "p.diff").write_bytes(diff)
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    for cmd in (["git", "apply", "--check", "p.diff"], ["patch", "--dry-run", "-p1", "-i", "p.diff"]):
        r = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd[0]}: {r.stdout}{r.stderr}\n{diff!r}"
    r = subprocess.run(["patch", "-p1", "-s", "-i", "p.diff"], cwd=folder, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("kind", sorted(FILES))
def test_edits_keep_the_files_own_bytes_and_the_diff_applies(tmp_path: Path, kind: str) -> None:
    from bisector.fixers.base import SourceEdit

    data = FILES[kind]
    project, fresh = tmp_path / "project", tmp_path / "fresh"
    for folder in (project, fresh):
        folder.mkdir()
        (folder / "m.py").write_bytes(data)
    f = project / "m.py"
    text = read_source(f)
    assert "\r" not in text and not text.startswith("\ufeff")  # what fixers and libcst get
    (patch,), _ = source_patches([SourceEdit(str(f), text, _edit(text), "drop append")], str(project))

    apply([patch], project)
    written = f.read_bytes()
    assert written == patch.after_bytes
    # every line but the dropped and the added one is the same bytes, its own ending included
    kept = [line for line in data.splitlines(keepends=True) if b"KEPT" not in line]
    newline = b"\n" if kind == "bom" else b"\r\n"
    assert written.splitlines(keepends=True) == [kept[0], b"import gc" + newline, *kept[1:]]
    assert read_source(f) == _edit(text)

    _git_and_patch_apply(fresh, patch.diff_bytes)
    assert (fresh / "m.py").read_bytes() == written


def test_a_line_without_an_ending_is_marked_in_the_diff(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_bytes(b"x = 1\r\ny = 2")
    patch = Patch.of_file(str(f), "x = 1\ny = 2", "x = 1\ny = 3", "s", str(tmp_path))
    assert patch.after_bytes == b"x = 1\r\ny = 3"  # still without one
    assert b"-y = 2\n\\ No newline at end of file\n+y = 3\n\\ No newline at end of file\n" in patch.diff_bytes
    _git_and_patch_apply(tmp_path, patch.diff_bytes)
    assert f.read_bytes() == b"x = 1\r\ny = 3"


def test_apply_refuses_a_file_whose_line_endings_changed_since_it_was_read(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_bytes(b"a\r\nb\r\n")
    patch = Patch.of_file(str(f), "a\nb\n", "a\nc\n", "s", str(tmp_path))
    f.write_bytes(b"a\nb\n")  # the same text to Python, other bytes: the patch's bytes no longer fit
    with pytest.raises(UserError, match="changed since bisector read it"):
        apply([patch], tmp_path)
    assert f.read_bytes() == b"a\nb\n"


def test_export_and_inference_scripts_keep_crlf_and_a_bom(tmp_path: Path) -> None:
    export = tmp_path / "export.py"
    export.write_bytes(b"\xef\xbb\xbf" + EXPORT.replace("\n", "\r\n").encode())
    serve = tmp_path / "serve.py"
    serve.write_bytes(SERVE.replace("\n", "\r\n").encode())
    s = settings(exporter="dynamo", onnxsim=True, session_options={"enable_cpu_mem_arena": False})
    p1, _ = patch_export_script(str(export), s, PLAN, str(tmp_path))
    p2, _ = patch_infer_script(str(serve), s, PLAN, str(tmp_path))
    assert p1.changed and p2.changed
    for p in (p1, p2):
        body = p.after_bytes.removeprefix(b"\xef\xbb\xbf")
        assert body.count(b"\n") == body.count(b"\r\n") > 0
    assert p1.after_bytes.startswith(b"\xef\xbb\xbfimport torch\r\n")
    _git_and_patch_apply(tmp_path, p1.diff_bytes + p2.diff_bytes)
    assert export.read_bytes() == p1.after_bytes and serve.read_bytes() == p2.after_bytes


def test_a_script_python_could_not_read_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "export.py"
    bad.write_bytes(b"# caf\xe9\nimport torch\n")  # not UTF-8, and no coding line says otherwise
    with pytest.raises(UserError, match=r"^cannot read --export-script .*export.py: invalid or missing encoding"):
        patch_export_script(str(bad), settings(exporter="dynamo"), PLAN, str(tmp_path))
    bad.write_bytes(b"import torch\n\n# caf\xe9\n")  # past the lines a coding line may be on
    with pytest.raises(UserError, match=r"^cannot read --export-script .*export.py: not valid utf-8 at byte 19$"):
        patch_export_script(str(bad), settings(exporter="dynamo"), PLAN, str(tmp_path))
    bad.write_bytes(b"# -*- coding: no-such-codec -*-\nimport torch\n")
    with pytest.raises(UserError, match="cannot read --infer-script .*: unknown encoding"):
        patch_infer_script(str(bad), settings(session_options={"a": 1}), PLAN, str(tmp_path))
