"""Growth split by owner: files grouped as the model, its libraries, the toolchain; native bytes;
and the verdict a stage gets once the owners are known."""

from __future__ import annotations

import os
import sysconfig
from types import SimpleNamespace

import pytest

from bisector.judge.attribution import attribute
from bisector.judge.owners import LIBRARIES, MODEL, OTHER, TOOLCHAIN, Classifier, model_share, project_roots, summarize
from bisector.judge.signals import Signal
from bisector.judge.verdict import LEAK, TOOLCHAIN_LEAK, Verdict

KB = 1024
SITE = "/venv/lib/python3.11/site-packages"
STDLIB = sysconfig.get_paths()["stdlib"]


@pytest.fixture()
def classifier(tmp_path) -> Classifier:
    return Classifier([str(tmp_path / "proj")], own=["/src/bisector"])


def test_files_are_grouped_by_owner(classifier, tmp_path) -> None:
    assert classifier.group(str(tmp_path / "proj" / "models" / "net.py")) == MODEL
    assert classifier.group(f"{SITE}/transformers/models/gpt2/modeling_gpt2.py") == LIBRARIES
    assert classifier.group(f"{SITE}/torch/fx/graph.py") == TOOLCHAIN
    assert classifier.group(f"{SITE}/onnxscript/ir/_core.py") == TOOLCHAIN
    assert classifier.group(f"{SITE}/onnxruntime/capi/onnxruntime_inference_collection.py") == TOOLCHAIN
    assert classifier.group("<eval_with_key>.3") == TOOLCHAIN  # torch.fx's generated forward
    assert classifier.group("/src/bisector/probe/workloads.py") == OTHER
    assert classifier.group(os.path.join(STDLIB, "collections", "__init__.py")) is None  # looked past
    assert classifier.group("/somewhere/else/helpers.py") == MODEL  # user code outside site-packages


def test_a_virtualenv_inside_the_project_is_still_site_packages(tmp_path) -> None:
    c = Classifier([str(tmp_path)])
    assert (
        c.group(str(tmp_path / ".venv" / "lib" / "python3.11" / "site-packages" / "torch" / "onnx" / "x.py"))
        == TOOLCHAIN
    )


def test_the_innermost_frame_past_the_standard_library_decides(classifier, tmp_path) -> None:
    model = str(tmp_path / "proj" / "net.py")
    deque = os.path.join(STDLIB, "collections", "__init__.py")
    assert classifier.owner([(deque, 10), (model, 42), (f"{SITE}/torch/nn/modules/module.py", 1750)]) == (
        MODEL,
        f"{model}:42",
    )
    assert classifier.owner([(deque, 10)])[0] == OTHER


def frame(filename: str, lineno: int) -> SimpleNamespace:
    return SimpleNamespace(filename=filename, lineno=lineno)


def diff(size: int, count: int, *frames: tuple[str, int]) -> SimpleNamespace:
    # tracemalloc orders a traceback from the oldest frame to the most recent.
    return SimpleNamespace(size_diff=size, count_diff=count, traceback=[frame(f, n) for f, n in reversed(frames)])


def test_summarize_splits_growth_per_call_and_finds_native_bytes(classifier, tmp_path) -> None:
    model = str(tmp_path / "proj" / "net.py")
    diffs = [
        diff(800 * KB, 2, (f"{SITE}/torch/fx/graph.py", 1023)),  # two large strings: malloc'd
        diff(20 * KB, 400, (f"{SITE}/torch/onnx/_internal/exporter/_schemas.py", 290)),  # small: pymalloc
        diff(8 * KB, 2, (model, 12)),
        diff(-4 * KB, -1, (f"{SITE}/torch/fx/graph.py", 900)),
    ]
    out = summarize(diffs, classifier, calls=2, heap_growth=2 * (404 * KB + 64 * KB))
    assert out["groups"][TOOLCHAIN] == (800 + 20 - 4) * KB // 2
    assert out["groups"][MODEL] == 4 * KB
    assert out["python_malloc"] == (800 + 8 - 4) * KB // 2  # blocks over 512 bytes only
    assert out["native"] == 64 * KB + 2 * KB  # the heap growth no malloc'd Python block explains
    assert out["sites"][TOOLCHAIN][0] == {"where": "torch/fx/graph.py:1023", "bytes": 400 * KB}


def test_model_share_counts_model_files_libraries_and_native() -> None:
    owners = {
        "groups": {MODEL: 1000, LIBRARIES: 500, TOOLCHAIN: 400_000, OTHER: 0},
        "native": 50_000,
        "python_malloc": 401_000,
    }
    assert model_share(owners) == 1500 + 50_000
    # The untraced probe's heap rate replaces the traced probe's own native estimate; beside a
    # 400 KB toolchain share, 1 KB of native growth is within the toolchain's own variation.
    assert model_share(owners, heap_rate=402_000) == 1500
    assert model_share(owners, heap_rate=450_000) == 1500 + 49_000


def test_a_list_resized_in_place_is_malloced_python(classifier) -> None:
    # One big list of every graph's source grows by realloc: no new block, but malloc'd bytes.
    grown = SimpleNamespace(
        size_diff=8 * KB, count_diff=0, size=800 * KB, count=1, traceback=[frame(f"{SITE}/torch/fx/graph.py", 10)]
    )
    assert summarize([grown], classifier, calls=1, heap_growth=8 * KB)["native"] == 0


def test_project_roots_reach_the_pyproject(tmp_path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname='p'\n")
    (tmp_path / "models").mkdir()
    roots = project_roots(str(tmp_path / "models" / "net.py"))
    assert roots == [str(tmp_path / "models"), str(tmp_path)]


def heap_leak(rate: float = 400 * KB) -> Verdict:
    s = Signal("heap", "repeat", "grows", rate, 3 * KB, 1 * KB, 1.0, 4, 12 * KB)
    return Verdict(
        kind=LEAK,
        growth_bytes_per_call=rate,
        growth_bytes_per_new_shape=None,
        baseline_bytes_per_call=3 * KB,
        baseline_bytes_per_new_shape=None,
        noise_bytes=None,
        signals=(s,),
        floor_bytes_per_call=12 * KB,
        growth_metric="heap",
    )


def owners(model: int, toolchain: int, python_malloc: int) -> dict:
    return {
        "repeat": {
            "calls": 1,
            "heap": 0,
            "groups": {MODEL: model, LIBRARIES: 0, TOOLCHAIN: toolchain, OTHER: 0},
            "native": 0,
            "python_malloc": python_malloc,
            "sites": {
                MODEL: [],
                LIBRARIES: [],
                OTHER: [],
                TOOLCHAIN: [{"where": "torch/fx/graph.py:1023", "bytes": toolchain}],
            },
        }
    }


def test_growth_the_toolchain_keeps_is_a_toolchain_leak_with_its_site() -> None:
    v = attribute(heap_leak(), owners(model=0, toolchain=405 * KB, python_malloc=401 * KB), "export")
    assert v.kind == TOOLCHAIN_LEAK
    assert "torch/fx/graph.py:1023" in v.reasons[0] and "not your model" in v.reasons[0]
    assert v.owners is not None


def test_native_growth_beside_the_toolchains_is_the_models() -> None:
    v = attribute(heap_leak(rate=470 * KB), owners(model=0, toolchain=405 * KB, python_malloc=401 * KB), "export")
    assert v.kind == LEAK and "native" in v.reasons[-1]


def test_objects_that_grow_are_the_models_without_a_trace() -> None:
    v = heap_leak()
    objects = Signal("objects", "repeat", "grows", 5.0, 0.0, 0.0, 1.0, 4)
    v2 = Verdict(**{**v.__dict__, "signals": v.signals + (objects,)})
    assert attribute(v2, owners(model=0, toolchain=405 * KB, python_malloc=401 * KB), "export").kind == LEAK


def test_the_terminal_report_states_the_floor_and_the_owners() -> None:
    from bisector.lab.results import StageResult
    from bisector.reports.stage_lines import owners_lines, reason_lines, stage_line

    clean = Verdict(
        kind="clean",
        growth_bytes_per_call=0.0,
        growth_bytes_per_new_shape=None,
        baseline_bytes_per_call=0.0,
        baseline_bytes_per_new_shape=None,
        noise_bytes=None,
        floor_bytes_per_call=2048.0,
        growth_metric="heap",
    )
    assert "clean (nothing above 2.0 KB/call)" in stage_line(StageResult("eager", "clean", verdict=clean))
    # A growth under the floor is a measurement still: printed with its interval, not as "~0".
    under = Verdict(**{**clean.__dict__, "growth_bytes_per_call": 1536.0, "error_bytes_per_call": 410.0})
    line = stage_line(StageResult("eager", "clean", verdict=under))
    assert "+1.5 KB/call ± 410 B (under the 2.0 KB floor)" in line and "~0 B/call" not in line
    v = attribute(heap_leak(), owners(model=0, toolchain=405 * KB, python_malloc=401 * KB), "export")
    r = StageResult("export", v.kind, verdict=v)
    line = stage_line(r)
    assert "toolchain-leak" in line and "/export" in line
    (who,) = owners_lines(r)
    assert "toolchain 414.7 KB (torch/fx/graph.py:1023)" in who and "your model 0 B" in who
    assert any("not your model's code" in x for x in reason_lines(r))


def test_the_controls_own_native_growth_is_not_the_models() -> None:
    # The relu control grows ~10 KB per dynamo export, ~1 KB of it native; a clean CNN's export
    # grows 20 KB, 12 KB of it malloc'd Python: above the control, 10 KB of heap, 9 KB of Python.
    v = heap_leak(rate=10 * KB)
    v = Verdict(**{**v.__dict__, "baseline_bytes_per_call": 10 * KB, "floor_bytes_per_call": 5 * KB})
    model = owners(model=0, toolchain=14 * KB, python_malloc=12 * KB)
    control = {"repeat": {"python_malloc": 3 * KB, "groups": {}, "sites": {}}}
    assert attribute(v, model, "export", control).kind == TOOLCHAIN_LEAK  # 1 KB native: under the floor
    assert attribute(v, model, "export").kind == LEAK  # without the traced control, 8 KB looked native


def with_objects(o: dict, per_call: dict, sites: dict) -> dict:
    o["repeat"]["objects"] = {"new": 2, "per_call": per_call, "sites": sites}
    return o


SCRIPTED_SITE = (
    "Tensor allocated at torch/onnx/_internal/torchscript_exporter/utils.py:972, held by no Python container"
)


def test_objects_torch_allocated_and_holds_make_a_toolchain_leak_with_its_site() -> None:
    # pytorch/pytorch#82532: a scripted module's export keeps two cloned parameter wrappers, and
    # ~32 KB of native state behind them, per export; no Python byte of the model's grows.
    v = heap_leak(rate=32 * KB)
    objects = Signal("objects", "repeat", "grows", 2.0, 0.0, 0.0, 1.0, 4)
    v = Verdict(**{**v.__dict__, "signals": v.signals + (objects,), "objects_per_call": 2.0})
    o = with_objects(owners(model=0, toolchain=1 * KB, python_malloc=0), {TOOLCHAIN: 2.0}, {TOOLCHAIN: []})
    o["repeat"]["objects"]["sites"][TOOLCHAIN] = [{"where": SCRIPTED_SITE, "objects": 2.0}]
    got = attribute(v, o, "export")
    assert got.kind == TOOLCHAIN_LEAK
    (reason,) = got.reasons
    assert "utils.py:972" in reason and "keeps 2 objects" in reason
    assert "the model's code keeps 0 B and 0 objects/export" in reason and "not your model's code" in reason
    # Without the object owners, the same native bytes were the model's (the report).
    assert attribute(heap_leak(rate=32 * KB), owners(model=0, toolchain=1 * KB, python_malloc=0), "export").kind == LEAK


def test_objects_the_model_holds_stay_a_leak() -> None:
    v = heap_leak(rate=32 * KB)
    objects = Signal("objects", "repeat", "grows", 2.0, 0.0, 0.0, 1.0, 4)
    v = Verdict(**{**v.__dict__, "signals": v.signals + (objects,)})
    held = {MODEL: [{"where": "held by net.Net.cache", "objects": 2.0}], TOOLCHAIN: []}
    o = with_objects(owners(model=0, toolchain=1 * KB, python_malloc=0), {MODEL: 2.0, TOOLCHAIN: 1.0}, held)
    assert attribute(v, o, "export").kind == LEAK


def test_objects_a_single_traced_export_makes_do_not_move_native_growth() -> None:
    # A dynamo export fills caches of its own (op signatures): new objects in the traced span, but
    # no object grows per call; 2 MB of native growth stays the model's (native_leak.py).
    v = heap_leak(rate=2048 * KB)
    v = Verdict(**{**v.__dict__, "objects_per_call": -0.5})
    sites = {TOOLCHAIN: [{"where": "OpSignature allocated at torch/onnx/_internal/exporter/_schemas.py:325"}]}
    o = with_objects(owners(model=0, toolchain=45 * KB, python_malloc=0), {TOOLCHAIN: 2720.0}, sites)
    assert attribute(v, o, "export").kind == LEAK


@pytest.mark.parametrize("steady", [0.5, 1.0, 2.0])
def test_a_steady_count_that_wanders_up_does_not_give_native_growth_to_a_dynamo_exports_objects(steady) -> None:
    # The same dynamo export, its steady object count up by a wander (0.5-2 per export; in 8 of 16
    # measurements of export_native.py and native_leak.py): the ~2,700 objects its one traced span
    # left are not what grows, so the model's 64 KB of native growth per export stays the model's.
    v = heap_leak(rate=64 * KB)
    v = Verdict(**{**v.__dict__, "objects_per_call": steady, "floor_bytes_per_call": 16 * KB})
    sites = {TOOLCHAIN: [{"where": "OpSignature allocated at torch/onnx/_internal/exporter/_schemas.py:325"}]}
    o = with_objects(owners(model=0, toolchain=45 * KB, python_malloc=0), {TOOLCHAIN: 2720.0}, sites)
    assert attribute(v, o, "export").kind == LEAK
    # Even when the objects signal says they grow: the bytes decide, as without the tracer's objects.
    grows = Signal("objects", "repeat", "grows", steady, 0.0, 0.0, 1.0, 4)
    assert attribute(Verdict(**{**v.__dict__, "signals": v.signals + (grows,)}), o, "export").kind == LEAK
    # A clean model's dynamo export, the same wander: its growth is torch's Python, a toolchain-leak.
    clean = with_objects(owners(model=0, toolchain=60 * KB, python_malloc=60 * KB), {TOOLCHAIN: 2720.0}, sites)
    assert attribute(v, clean, "export").kind == TOOLCHAIN_LEAK


def test_a_toolchain_leaks_advice_names_the_bug_and_the_workarounds_not_the_models_code() -> None:
    from bisector.find.localise import hint_for
    from bisector.model.figures import Figures

    figures = Figures.of(
        {"owners": with_objects(owners(0, 1 * KB, 0), {TOOLCHAIN: 2.0}, {TOOLCHAIN: [{"where": SCRIPTED_SITE}]})}
    )
    hint = hint_for("export", TOOLCHAIN_LEAK, False, figures, "RecursiveScriptModule")
    assert "pytorch/pytorch#82532" in hint and "not your model's code" in hint
    assert "export in a child process" in hint and "eager module" in hint
    assert "symbolic" not in hint
    fx = Figures.of({"owners": owners(0, 405 * KB, 401 * KB)})  # torch.fx's growth under torch.export
    assert "torch/fx/graph.py" in hint_for("export", TOOLCHAIN_LEAK, False, fx, "GPT2Model")


def test_objects_torch_allocated_in_a_container_the_model_grows_stay_a_leak() -> None:
    # forward_hook: a hook appends each export's traced output to a module-level list. Torch made
    # the tensors and the walk did not reach them through the exporter's wrappers, but the model's
    # list gained an entry per export: the model keeps them.
    v = heap_leak(rate=14 * KB)
    objects = Signal("objects", "repeat", "grows", 2.0, 0.0, 0.0, 1.0, 4)
    v = Verdict(**{**v.__dict__, "signals": v.signals + (objects,), "objects_per_call": 2.0})
    o = with_objects(owners(model=0, toolchain=1 * KB, python_malloc=0), {TOOLCHAIN: 2.0}, {TOOLCHAIN: []})
    o["repeat"]["objects"]["sites"][TOOLCHAIN] = [{"where": SCRIPTED_SITE, "objects": 2.0}]
    assert attribute(v, o, "export").kind == TOOLCHAIN_LEAK
    o["repeat"]["objects"]["model_entries_per_call"] = 1.0
    assert attribute(v, o, "export").kind == LEAK
