"""Issue 21, items 2 and 3: a serving script's sessions keyed by the model's name as the code's data
flow carries it (never by one model's literal), and an export call's settings read from the
script's tables at the model's entry.

The script shapes are in tests/fixtures/serving_keys: `<shape>.py` as a team writes it, and
`<shape>.patched` the exact text after two models' settings are composed into it (tagger's
session options, then ranker's warm-up), the copied helpers shown as `<helpers>`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bisector.model.spec import ModelSpec, build_input_plan
from bisector.patching.export_script import read_export, script_input_names, unread_export
from bisector.patching.from_report import ModelWork, compose
from bisector.patching.serving import aliases, helpers_code, patch_serving, read_serving, read_table
from bisector.patching.sites import find_sites, place

SHAPES = Path(__file__).resolve().parents[1] / "fixtures" / "serving_keys"
TAGGER = {"session_options": {"enable_mem_pattern": False}}
RANKER = {"warm_up_largest": [{0: 8}]}
# What carries the model's name at each shape's session.
KEY_CODE = {
    "fstring": "name",
    "concat": "name",
    "os_path_join_pool": "name",
    "path_division": "model",
    "str_format": "name",
    "percent": "name",
    "name_to_path_dict": "name",
    "factory_of_paths": "os.path.splitext(os.path.basename(path))[0]",
    "registry_loop": "name",
    "registry_items": "name",
    "unproven": None,
}


def composed(source: str) -> tuple[str, list[str]]:
    one = patch_serving(source, "tagger", TAGGER)
    two = patch_serving(one.text, "ranker", RANKER)
    return two.text, [one.note, two.note]


def test_every_shape_has_its_fixture() -> None:
    assert sorted(p.stem for p in SHAPES.glob("*.py")) == sorted(KEY_CODE)
    assert len(KEY_CODE) >= 10


@pytest.mark.parametrize("shape", sorted(KEY_CODE))
def test_the_session_is_keyed_by_the_variable_that_carries_the_name(shape: str) -> None:
    source = (SHAPES / f"{shape}.py").read_text()
    (site,) = find_sites(source)
    assert site.key.code == KEY_CODE[shape] and site.literal is None, site.key
    after, notes = composed(source)
    assert after.replace(helpers_code(aliases(after)), "<helpers>") == (SHAPES / f"{shape}.patched").read_text()
    # One table, each model's own entry; no call keyed by one model's literal.
    assert read_table(after) == {"tagger": TAGGER, "ranker": RANKER}
    assert not re.search(r"_bisector_session(_options)?\([^\n]*'(tagger|ranker)'", after)
    assert patch_serving(after, "ranker", RANKER).text == after  # idempotent
    if KEY_CODE[shape] is None:
        # Not proven: the table is there, the session is left as it is with one comment saying
        # where to pass the key, the note says so, and nothing is read back as applied.
        assert after.count("# bisector: pass the model's name as NAME") == 1
        assert "\n    session = ort.InferenceSession(sys.argv[1])\n" in after
        assert all("no session is traced to" in n and "sys.argv[1]" in n for n in notes)
        assert read_serving(after, "tagger") == {} and read_serving(after, "ranker") == {}
    else:
        assert notes == ["", ""]
        code = KEY_CODE[shape]
        assert f"sess_options=_bisector_session_options({code}, " in after and f"), {code})" in after
        ranker = read_serving(after, "ranker")
        assert ranker.get("warmup") == "largest" and "enable_mem_pattern" not in str(ranker)
        assert read_serving(after, "tagger")["session_options"]["enable_mem_pattern"] is False


def test_a_literal_dict_maps_a_model_named_by_its_file_to_the_dicts_key() -> None:
    source = (SHAPES / "name_to_path_dict.py").read_text()  # "ranker": "weights/ranker-v2.onnx"
    where = place(source, "ranker-v2")
    assert where.table_key == "ranker" and where.sites[0].key_code == "name"
    after = patch_serving(source, "ranker-v2", RANKER).text
    assert read_table(after) == {"ranker": RANKER} and read_serving(after, "ranker-v2")["warmup"] == "largest"


def test_a_session_an_older_patch_keyed_by_one_models_name_is_rekeyed() -> None:
    """The bug of issue 21: the shared pool's session keyed by 'tagger', so every model got tagger's
    settings. A new patch keys it by the variable."""
    wrong = (
        (SHAPES / "os_path_join_pool.py")
        .read_text()
        .replace(
            'ort.InferenceSession(path, providers=["CPUExecutionProvider"])',
            '_bisector_session(ort.InferenceSession(path, providers=["CPUExecutionProvider"], '
            "sess_options=_bisector_session_options('tagger', None)), 'tagger')",
        )
    )
    after = patch_serving(wrong, "ranker", RANKER).text
    assert "_bisector_session_options(name, None)), name)" in after and "'tagger'" not in after


@pytest.mark.parametrize(
    ("source", "why"),
    [
        (
            "import onnxruntime as ort\n\nclass P:\n    def load(self):\n"
            "        return ort.InferenceSession(self.path)\n",
            "",
        ),
        (
            "import onnxruntime as ort\n\ndef make(path):\n    return ort.InferenceSession(path)\n",
            "make() is called nowhere",
        ),
        (
            "import onnxruntime as ort\n\ndef make(path):\n    return ort.InferenceSession(path)\n\n"
            "S = list(map(make, PATHS))\n",
            "passed around as a value",
        ),
        (
            "import onnxruntime as ort\n\ndef make(path):\n    return ort.InferenceSession(path)\n\n"
            'A = make("a.onnx")\nB = make(CONFIG["b"])\n',
            'make() is called with `CONFIG["b"]`',
        ),
        (
            'import onnxruntime as ort\n\ndef make(d, n):\n    return ort.InferenceSession(f"{d}{n}.onnx")\n',
            "built from 2 values",
        ),
        (
            "import onnxruntime as ort\n\ndef make(name):\n    return ort.InferenceSession(get(name) + '.onnx')\n",
            "computed",
        ),
    ],
)
def test_a_key_that_cannot_be_proven_is_not_guessed(source: str, why: str) -> None:
    (site,) = find_sites(source)
    assert not site.key.proven and why in site.key.why
    served = patch_serving(source, "tagger", TAGGER)
    assert served.placed and "no session is traced to tagger" in served.note
    assert "'tagger')" not in served.text and "# bisector: pass the model's name as NAME" in served.text


def test_each_model_of_a_lazy_pool_gets_only_its_own_settings_at_run_time() -> None:
    import onnxruntime

    after, _ = composed((SHAPES / "os_path_join_pool.py").read_text())
    built: dict[str, object] = {}

    class Session:
        def __init__(self, path: str, providers: list[str], sess_options: object = None) -> None:
            built[path] = sess_options
            self.runs = 0

        def get_inputs(self) -> list:
            return []

        def get_providers(self) -> list[str]:
            return ["CPUExecutionProvider"]

        def run(self, names: object, feed: dict) -> list:
            self.runs += 1
            return []

    ns: dict = {}
    exec(compile(after, "serve.py", "exec"), ns)
    ns["ort"] = type("ort", (), {"InferenceSession": Session, "SessionOptions": onnxruntime.SessionOptions})
    pool = ns["Pool"]()
    tagger, ranker = pool.get("tagger"), pool.get("ranker")
    assert built["models/tagger.onnx"].enable_mem_pattern is False and built["models/ranker.onnx"] is None
    assert tagger.runs == 0 and ranker.runs == 2  # the warm-up is the ranker's alone


CONVERT = """import os

import torch

from registry import REGISTRY

OUT = "artifacts"
AXES = {"tagger": {"x": {0: "batch"}}, "ranker": {"feats": {0: "batch", 1: "items"}}}
NAMES = {"tagger": "x", "ranker": "feats"}
OPSET = {"ranker": 18}


def export(name, model, example):
    path = os.path.join(OUT, name + ".onnx")
    torch.onnx.export(
        model, example, path, input_names=[NAMES[name]], dynamic_axes=AXES[name], opset_version=OPSET.get(name, 17)
    )


for name, (model, example) in REGISTRY.items():
    export(name, model(), example)
"""


def test_settings_in_literal_tables_are_read_at_the_models_entry(tmp_path: Path) -> None:
    assert read_export(CONVERT, "ranker") == {
        "export_kwargs": {
            "input_names": ["feats"],
            "dynamic_axes": {"feats": {0: "batch", 1: "items"}},
            "opset_version": 18,
        }
    }
    assert read_export(CONVERT, "tagger")["export_kwargs"] == {
        "input_names": ["x"],
        "dynamic_axes": {"x": {0: "batch"}},
        "opset_version": 17,
    }
    assert unread_export(CONVERT, "ranker") == []
    script = tmp_path / "convert.py"
    script.write_text(CONVERT)
    assert script_input_names(str(script), "ranker") == ["feats"]
    # A table of tuples unpacked in the export function (the catalog's shape), read lazily: the
    # entry holds tensors built by calls, the axes are literal.
    unpacked = (
        "import torch\n\nMODELS = {\n"
        '    "tagger": (Tagger, (torch.randn(2, 3),), {"x": {0: "batch"}}),\n'
        '    "ranker": (Ranker, (torch.randn(3, 4),), {"feats": {0: "batch"}}),\n}\n\n\n'
        "def export(name):\n    cls, example, axes = MODELS[name]\n"
        '    torch.onnx.export(cls(), example, f"{name}.onnx", input_names=list(axes), dynamic_axes=axes,'
        " dynamo=False)\n"
    )
    assert read_export(unpacked, "ranker") == {
        "exporter": "torchscript",
        "export_kwargs": {"input_names": ["feats"], "dynamic_axes": {"feats": {0: "batch"}}},
    }


def test_settings_that_are_not_literals_are_measured_with_the_declared_inputs_and_said(tmp_path: Path) -> None:
    source = CONVERT.replace(
        'AXES = {"tagger": {"x": {0: "batch"}}, "ranker": {"feats": {0: "batch", 1: "items"}}}', "AXES = load_axes()"
    ).replace('NAMES = {"tagger": "x", "ranker": "feats"}', "NAMES = read_names()")
    assert read_export(source, "ranker") == {"export_kwargs": {"opset_version": 18}}
    unread = unread_export(source, "ranker")
    assert [u.split(" ")[0] for u in unread] == ["input_names", "dynamic_axes"] and "read_names()" in unread[0]
    script = tmp_path / "convert.py"
    script.write_text(source)
    (tmp_path / "pyproject.toml").write_text("")
    plan = build_input_plan(["x=B,3"], ["B=1:4"])
    work = ModelWork("ranker", (), (), None, plan, ModelSpec(str(tmp_path / "m.py"), "Net"), str(script), None)
    patches, notes, _ = compose([work], tmp_path)
    assert patches == [] and notes["ranker"] == [
        "convert.py: its own " + "; ".join(unread) + " for ranker could not be read; measured with the declared inputs"
    ]
