"""The helpers bisector copies into user scripts: each one on its own, the copies standing alone,
and the probe running the same functions."""

from __future__ import annotations

import ast
import builtins

import numpy
import pytest

from bisector.patching import script_helpers as h

AXES = {"x": {0: "B", 2: "H"}}


class Meta:
    def __init__(self, name: str, shape: list, type: str = "tensor(float)") -> None:
        self.name, self.shape, self.type = name, shape, type


class FakeSession:
    """What the helpers read of an InferenceSession: its inputs' and outputs' metadata, and run."""

    def __init__(self, inputs: list[Meta], outputs: list[Meta] = ()) -> None:
        self.inputs, self.outputs, self.feeds = inputs, list(outputs), []

    def get_inputs(self) -> list[Meta]:
        return self.inputs

    def get_outputs(self) -> list[Meta]:
        return self.outputs

    def run(self, names, feed, *args):
        self.feeds.append({k: v.shape for k, v in feed.items()})
        x = feed["x"]
        return [numpy.ones((x.shape[0], x.shape[2], 16)), numpy.ones((16, 16))]


def test_the_guard_refuses_sizes_outside_the_bounds_and_passes_the_feed_on() -> None:
    feed = {"x": numpy.zeros((4, 3, 50)), "mask": numpy.zeros((999,))}
    assert h._bisector_guard(feed, AXES, {"B": (1, 16), "H": (5, 100)}) is feed
    assert h._bisector_guard(feed, AXES, {"B": (1, 16)}) is feed  # H has no bound: any size
    with pytest.raises(ValueError, match=r"input x axis 0 \(B\) = 4 is outside 8..16"):
        h._bisector_guard(feed, AXES, {"B": (8, 16)})


def test_padding_touches_only_the_varying_axes() -> None:
    x = numpy.ones((3, 3, 21), dtype=numpy.float32)
    mask = numpy.ones((5,), dtype=numpy.int64)
    out = h._bisector_pad({"x": x, "mask": mask}, 16, AXES)
    assert out["x"].shape == (16, 3, 32) and out["x"].dtype == numpy.float32
    assert out["x"][:3, :, :21].sum() == x.sum() and out["x"].sum() == x.sum()  # zeros added, nothing moved
    assert out["mask"] is mask  # no varying axis: passed as it is
    assert h._bisector_pad({"x": numpy.ones((16, 3, 32))}, 16, AXES)["x"].shape == (16, 3, 32)


def test_crop_follows_the_graphs_axis_names_then_the_inputs_axes() -> None:
    feed = {"x": numpy.ones((3, 3, 5))}
    padded = h._bisector_pad(feed, 16, AXES)
    # Named axes: (B, H, 16) is cropped on B and H only, though 16 equals the padded H; (16, 16) is fixed.
    session = FakeSession([Meta("x", ["B", 3, "H"])], [Meta("logits", ["B", "H", 16]), Meta("pooled", [16, 16])])
    logits, pooled = h._bisector_crop(session.run(None, padded), feed, padded, session, None, AXES)
    assert logits.shape == (3, 5, 16) and pooled.shape == (16, 16)
    # Unnamed axes: cropped where they line up with a padded input axis (same rank, or axis 0).
    outs = [numpy.ones((16, 3, 16)), numpy.ones((16, 10)), numpy.ones((4, 16))]
    same_rank, head, other = h._bisector_crop(outs, feed, padded, None, None, AXES)
    assert same_rank.shape == (3, 3, 5) and head.shape == (3, 10) and other.shape == (4, 16)
    assert h._bisector_crop(["not an array"], feed, padded, None, None, AXES) == ["not an array"]


def test_run_guards_pads_runs_and_crops_with_the_scripts_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h, "_BISECTOR_DYNAMIC_AXES", AXES)
    monkeypatch.setattr(h, "_BISECTOR_BOUNDS", {"H": (1, 40)})
    session = FakeSession([Meta("x", ["B", 3, "H"])], [Meta("logits", ["B", "H", 16]), Meta("pooled", [16, 16])])
    logits, _ = h._bisector_run(session.run, None, {"x": numpy.ones((3, 3, 5))}, 16, "run options")
    assert session.feeds == [{"x": (16, 3, 16)}] and logits.shape == (3, 5, 16)
    with pytest.raises(ValueError, match="outside 1..40"):
        h._bisector_run(session.run, None, {"x": numpy.ones((3, 3, 41))}, 16)


def test_the_warm_up_feed_comes_from_the_session_and_runs_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    session = FakeSession([Meta("x", ["B", 3, "H"]), Meta("ids", ["B", 7], "tensor(int64)")])
    feed = h._bisector_feed(session, [{0: 4, 2: 32}])
    assert feed["x"].shape == (4, 3, 32) and feed["x"].dtype == numpy.float32
    assert feed["ids"].shape == (1, 7) and feed["ids"].dtype == numpy.int64  # no sizes given: 1 for a named axis
    monkeypatch.setattr(h, "_BISECTOR_WARM_UP_LARGEST", [{0: 4, 2: 32}, {0: 4}])
    h._bisector_warm_up(session)
    assert session.feeds == [{"x": (4, 3, 32), "ids": (4, 7)}] * 2


def test_session_options_come_from_this_models_table_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        h, "_BISECTOR_SESSIONS", {"tagger": {"session_options": {"enable_mem_pattern": False, "session.x": 1}}}
    )
    mine = h._bisector_session_options("tagger")
    assert mine.enable_mem_pattern is False and mine.get_session_config_entry("session.x") == "1"
    theirs = object()
    assert h._bisector_session_options("heatmap", theirs) is theirs  # another model's: left as it was


def _globals_read(fn_source: str) -> set[str]:
    tree = ast.parse(fn_source)
    fn = tree.body[0]
    local = {a.arg for a in ast.walk(fn) if isinstance(a, ast.arg)}
    local |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    local |= {n.name for n in ast.walk(fn) if isinstance(n, ast.FunctionDef)}
    return {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - local


@pytest.mark.parametrize("names", [h.SERVING_HELPERS, h.GUARD_HELPERS, h.PADDING_HELPERS, h.WARM_UP_HELPERS])
def test_each_copied_set_needs_only_numpy_onnxruntime_its_constants_and_itself(names: tuple[str, ...]) -> None:
    allowed = set(dir(builtins)) | {"numpy", "onnxruntime"} | set(names)
    allowed |= {n for n in vars(h) if n.startswith("_BISECTOR_")}
    for name in names:
        assert _globals_read(h.source_of([name])) <= allowed, name


def test_copies_run_on_their_own_with_the_scripts_aliases() -> None:
    code = h.source_of(h.PADDING_HELPERS, {"numpy": "np"})
    assert "np.pad(" in code and "numpy." not in code
    ns: dict = {"np": numpy, "_BISECTOR_DYNAMIC_AXES": AXES, "_BISECTOR_BOUNDS": {}}
    exec(code, ns)
    assert ns["_bisector_pad"]({"x": numpy.ones((3, 3, 5))}, 8)["x"].shape == (8, 3, 8)


def test_the_probe_pads_and_guards_with_the_same_helpers() -> None:
    from bisector.probe.loading import WorkloadError
    from bisector.probe.ort import InputAdapter
    from bisector.probe.types import ProbeOptions

    options = ProbeOptions(input_transform="round:16", export_kwargs={"bounded_dims": {"B": [1, 16]}})
    adapt = InputAdapter(options, [{0: "B", 2: "H"}, {}], target=None)
    mask = numpy.ones((2, 5))
    out = adapt.feed({"x": numpy.ones((3, 3, 21)), "mask": mask}, session=None)
    assert out["x"].shape == (16, 3, 32) and out["mask"] is mask
    with pytest.raises(WorkloadError, match=r"input x axis 0 \(B\) = 17 is outside 1..16"):
        adapt.feed({"x": numpy.ones((17, 3, 21)), "mask": mask}, session=None)
    plain = InputAdapter(ProbeOptions(), [{0: "B"}], target=None)
    feed = {"x": numpy.ones((3, 3))}
    assert plain.feed(feed, session=None) is feed
