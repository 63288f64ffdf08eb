"""Serving and export scripts shared by several models: scoping, composition, idempotence per
setting, reading settings back; and the behaviour-removal detector."""

from __future__ import annotations

import ast
from pathlib import Path

from bisector.model.spec import ModelSpec, build_input_plan
from bisector.patching.export_script import read_export
from bisector.patching.from_report import ModelWork, compose
from bisector.patching.serving import patch_serving, read_serving
from bisector.patching.sites import find_sites, site_for

SHARED = """import numpy as np
import onnxruntime as ort

ARTIFACTS = "artifacts"


class Predictor:
    def __init__(self, name):
        self.session = ort.InferenceSession(f"{ARTIFACTS}/{name}.onnx", providers=["CPUExecutionProvider"])


PREDICTORS = [Predictor("tagger"), Predictor("heatmap")]
"""

SEPARATE = """import onnxruntime

tagger = onnxruntime.InferenceSession("artifacts/tagger.onnx")
heatmap = onnxruntime.InferenceSession("artifacts/heatmap.onnx")
"""

WARM = {"session_options": {"enable_mem_pattern": False}, "warm_up_largest": [{0: 4, 2: 96, 3: 96}]}


def test_a_session_is_found_by_the_path_expression_naming_the_model() -> None:
    (site,) = find_sites(SHARED)
    assert site.key_code == "name" and site.literal is None
    assert site_for(SHARED, "heatmap")[0] == site
    literal = find_sites(SEPARATE)
    assert [s.literal for s in literal] == ["tagger", "heatmap"]
    assert site_for(SEPARATE, "heatmap")[0].line == 4
    none, note = site_for(SEPARATE, "ranker")
    assert none is None and "ranker.onnx" in note


def test_settings_go_to_this_models_session_only() -> None:
    new, note, _ = patch_serving(SEPARATE, "heatmap", WARM)
    assert note == ""
    tree = ast.parse(new)
    assigns = {n.targets[0].id: ast.unparse(n.value) for n in tree.body if isinstance(n, ast.Assign)}
    assert assigns["tagger"] == "onnxruntime.InferenceSession('artifacts/tagger.onnx')"  # untouched
    assert assigns["heatmap"].startswith("_bisector_session(onnxruntime.InferenceSession('artifacts/heatmap.onnx'")
    shared, _, _ = patch_serving(SHARED, "heatmap", WARM)
    # One place builds every session: the settings are keyed by model and looked up by the name.
    assert "sess_options=_bisector_session_options(name, None)), name)" in shared
    assert read_serving(shared, "tagger") == {} and read_serving(shared, "heatmap")["warmup"] == "largest"
    assert "import onnxruntime\n" not in shared and "np.zeros(" in shared  # the script's aliases


def test_generated_helpers_build_feeds_from_the_session(tmp_path: Path) -> None:
    import numpy
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT)],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "tokens"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "encoder.onnx"))
    new, _, _ = patch_serving(
        SHARED.replace('"tagger"', '"encoder"'),
        "encoder",
        {"warm_up_largest": [{0: 4, 1: 32}], "run_options": {"memory.enable_memory_arena_shrinkage": "cpu:0"}},
    )
    ns: dict = {}
    exec(
        compile(
            new.replace('ARTIFACTS = "artifacts"', f"ARTIFACTS = {str(tmp_path)!r}").split("PREDICTORS =")[0],
            "serve.py",
            "exec",
        ),
        ns,
    )
    p = ns["Predictor"]("encoder")
    feed = ns["_bisector_feed"](p.session, [{0: 4, 1: 32}])
    assert feed["ids"].dtype == numpy.int64 and feed["ids"].shape == (4, 32)  # the int64 input gets int64
    assert p.session.run(None, {"ids": numpy.ones((2, 3), dtype=numpy.int64)})[0].shape == (
        2,
        3,
    )  # runs with its run options


def test_each_setting_is_added_once_and_other_models_entries_stay() -> None:
    once, _, _ = patch_serving(SHARED, "heatmap", WARM)
    assert patch_serving(once, "heatmap", WARM)[0] == once  # idempotent, no file-wide marker
    more, _, _ = patch_serving(once, "heatmap", {"session_options": {"enable_cpu_mem_arena": False}})
    assert read_serving(more, "heatmap")["session_options"] == {
        "enable_mem_pattern": False,
        "enable_cpu_mem_arena": False,
    }
    both, _, _ = patch_serving(more, "tagger", {"run_options": {"memory.enable_memory_arena_shrinkage": "cpu:0"}})
    assert read_serving(both, "tagger") == {"run_options": {"memory.enable_memory_arena_shrinkage": "cpu:0"}}
    assert read_serving(both, "heatmap")["warmup"] == "largest"
    assert both.count("def _bisector_session(") == 1 and both.count("_bisector_session(ort.InferenceSession") == 1


def test_settings_the_user_wrote_are_read_back() -> None:
    user = SHARED.replace(
        '        self.session = ort.InferenceSession(f"{ARTIFACTS}/{name}.onnx", providers=["CPUExecutionProvider"])',
        "        opts = ort.SessionOptions()\n        opts.enable_cpu_mem_arena = False\n"
        '        self.session = ort.InferenceSession(f"{ARTIFACTS}/{name}.onnx", opts)',
    )
    assert read_serving(user, "tagger") == {"session_options": {"enable_cpu_mem_arena": False}}
    export = (
        "import torch\n\ndef export(name, model, x):\n"
        '    torch.onnx.export(model, (x,), f"{name}.onnx", dynamo=False, opset_version=17)\n'
    )
    assert read_export(export, "tagger") == {"exporter": "torchscript", "export_kwargs": {"opset_version": 17}}


def test_models_compose_into_one_patch_per_file(tmp_path: Path) -> None:
    serve = tmp_path / "serve.py"
    serve.write_text(SHARED)
    (tmp_path / "pyproject.toml").write_text("")
    plan = build_input_plan(["x=B,3,H,W"], ["B=1:4", "H=16:96", "W=16:96"])
    model = ModelSpec(str(tmp_path / "m.py"), "Net")
    works = [
        ModelWork(
            "heatmap",
            (),
            ({"warmup": "largest", "session_options": {"enable_mem_pattern": False}},),
            None,
            plan,
            model,
            None,
            str(serve),
        ),
        ModelWork(
            "tagger",
            (),
            ({"run_options": {"memory.enable_memory_arena_shrinkage": "cpu:0"}},),
            None,
            plan,
            model,
            None,
            str(serve),
        ),
    ]
    patches, notes, files = compose(works, tmp_path)
    (patch,) = patches
    assert notes == {"heatmap": [], "tagger": []} and files["heatmap"] == files["tagger"] == [str(serve.resolve())]
    assert read_serving(patch.after, "heatmap")["warmup"] == "largest" and "run_options" in read_serving(
        patch.after, "tagger"
    )
    assert patch.diff.startswith("diff --git a/serve.py b/serve.py\nindex ")
    # Applied, the same works compose to nothing more.
    serve.write_text(patch.after)
    assert compose(works, tmp_path)[0] == []
    # ModelWork survives a resumed run.
    assert ModelWork.from_json(works[0].to_json()) == works[0]


def test_removing_data_other_code_reads_is_labelled_and_bounding_comes_first() -> None:
    from bisector.fixers.append_only import FIXER
    from bisector.fixers.base import FixTarget
    from bisector.fixers.collecting_hooks import FIXER as HOOKS

    src = (
        "class Tagger:\n    def __init__(self):\n        self.stats = []\n\n    def forward(self, x):\n"
        "        self.stats.append(x)\n        return x\n\n    def pop_stats(self):\n        out = self.stats\n"
        "        self.stats = []\n        return out\n"
    )
    cands = FIXER.propose(FixTarget("eager", "leak", region_type="m.Tagger", sources={"m.py": src}))
    removal = [c for c in cands if c.removes_behaviour]
    assert len(removal) == 1 and "Tagger.pop_stats()" in removal[0].removes_behaviour
    assert cands[-1] is removal[0]
    deque = next(c for c in cands if "deque" in c.summary).edits[0].after
    assert deque.count("collections.deque(maxlen=4)") == 2  # the reset in pop_stats is bounded too
    trim = next(c for c in cands if "oldest dropped" in c.summary).edits[0].after
    assert "del self.stats[:-4]" in trim
    # Nothing in these files reads it: deleting the append still empties what it keeps (code
    # elsewhere may read a public attribute), so it is labelled, though with no reader to name.
    alone = src.split("    def pop_stats")[0]
    labels = [
        c.removes_behaviour
        for c in FIXER.propose(FixTarget("eager", "leak", region_type="m.Tagger", sources={"m.py": alone}))
    ]
    assert labels.count("self.stats would stay empty") == 1 and labels.count("") == len(labels) - 1
    hook = (
        "ACTS = []\n\ndef keep(m, a, out):\n    ACTS.append(out)\n\ndef latest():\n    return ACTS[-1]\n\n"
        "class Net:\n    def __init__(self):\n        self.fc.register_forward_hook(keep)\n\n"
        "    def forward(self, x):\n        return self.fc(x)\n"
    )
    cands = HOOKS.propose(FixTarget("eager", "leak", region_type="m.Linear", sources={"m.py": hook}))
    assert "latest()" in cands[-1].removes_behaviour and "del ACTS[:-4]" in cands[0].edits[0].after


def test_rank_puts_behaviour_removal_and_costly_warm_ups_last() -> None:
    from bisector.fix.evaluation import Evaluation
    from bisector.judge.choice import rank

    def ev(summary: str, saved: float, **kw) -> Evaluation:
        return Evaluation(
            ("f",), summary, "", "eager", {}, {}, {}, True, 0.0, 0.0, True, "kept", False, 1, saved=saved, **kw
        )

    ranked = rank(
        [
            ev("remove", 10, removes_behaviour="read by x()"),
            ev("warm", 10, upfront_bytes=50e6, prevented_bytes=20e6),
            ev("bound", 5),
        ]
    )
    assert [e.summary for e in ranked] == ["bound", "warm", "remove"]


def test_padding_is_not_written_around_a_session_every_model_shares(tmp_path: Path) -> None:
    from bisector.patching.infer_script import patch_infer_script
    from bisector.patching.settings import Settings

    serve = tmp_path / "serve.py"
    serve.write_text(SHARED)
    plan = build_input_plan(["x=B,3,H,W"], ["B=1:4", "H=16:96", "W=16:96"])
    patch, notes = patch_infer_script(
        str(serve),
        Settings(round_multiple=16, session_options={"enable_mem_pattern": False}),
        plan,
        str(tmp_path),
        key="heatmap",
    )
    assert (
        "_bisector_run(" not in patch.after
        and "serves every model; rounded sizes for heatmap is not written" in notes[0]
    )
    assert read_serving(patch.after, "heatmap") == {"session_options": {"enable_mem_pattern": False}}


def test_export_settings_go_to_this_models_call_and_never_to_a_shared_one(tmp_path: Path) -> None:
    from bisector.patching.export_script import patch_export_script
    from bisector.patching.settings import Settings

    plan = build_input_plan(["x=B,3,H,W"], ["B=1:4", "H=16:96", "W=16:96"])
    two = tmp_path / "two.py"
    two.write_text(
        'import torch\ntorch.onnx.export(a, (x,), "tagger.onnx")\ntorch.onnx.export(b, (x,), "heatmap.onnx")\n'
    )
    patch, notes = patch_export_script(
        str(two), Settings(export_kwargs={"do_constant_folding": True}), plan, str(tmp_path), key="heatmap"
    )
    assert notes == [] and patch.after.splitlines()[1] == 'torch.onnx.export(a, (x,), "tagger.onnx")'
    assert patch.after.splitlines()[2] == 'torch.onnx.export(b, (x,), "heatmap.onnx", do_constant_folding=True)'
    shared = tmp_path / "shared.py"
    shared.write_text(
        'import torch\n\ndef export(name, m, x):\n    torch.onnx.export(m, (x,), f"{name}.onnx", dynamo=False)\n'
    )
    patch, notes = patch_export_script(
        str(shared),
        Settings(exporter="torchscript", export_kwargs={"do_constant_folding": True}, onnxsim=True),
        plan,
        str(tmp_path),
        key="heatmap",
    )
    assert not patch.changed and "builds every model's path from a name" in notes[0] and "onnxsim" in notes[1]
    # What is already there is no change: nothing to say.
    same, notes = patch_export_script(str(shared), Settings(exporter="torchscript"), plan, str(tmp_path), key="heatmap")
    assert not same.changed and notes == []


def test_a_one_model_script_gets_the_settings_under_the_name_its_session_uses() -> None:
    one = 'import onnxruntime\n\nsession = onnxruntime.InferenceSession("model.onnx")\n'
    new, note, _ = patch_serving(one, "net", WARM)
    assert (
        note == "" and "'model': {" in new and "sess_options=_bisector_session_options('model', None)), 'model')" in new
    )
    assert read_serving(new, "net")["warmup"] == "largest"


def test_a_fix_that_removes_behaviour_is_never_chosen_unasked() -> None:
    """Issue 20, item 3: when the only kept fix takes a feature away, no fix is chosen (the model
    stays unfixed and the note says why); --pick and --prefer can still take it."""
    from bisector.fix.evaluation import Evaluation
    from bisector.judge.choice import choose, not_chosen, rank

    def ev(summary: str, saved: float, **kw) -> Evaluation:
        return Evaluation(
            ("f",), summary, "", "eager", {}, {}, {}, True, 0.0, 0.0, True, "kept", False, 1, saved=saved, **kw
        )

    remove = ev("stop adding to self.recent", 10, removes_behaviour="summary() reads self.recent")
    warm = ev("warm", 10, upfront_bytes=50e6, prevented_bytes=20e6)
    assert choose([remove]) is None
    assert "only fixes that remove behaviour" in not_chosen([remove]) and "summary() reads" in not_chosen([remove])
    assert choose(rank([remove, warm])) is None
    assert "the others cost more memory up front" in not_chosen([remove, warm])
    assert choose([remove], pick=1) is remove and choose([remove], prefer="stop adding") is remove
    bound = ev("keep the last 64", 5)
    assert choose(rank([remove, warm, bound])) is bound
