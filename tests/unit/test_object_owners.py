"""Objects a traced probe's calls left alive, owned by retention path, else allocation site
(probe/objects.py), on plain objects in this process: no probe."""

from __future__ import annotations

import tracemalloc

from bisector.judge.owners import MODEL, TOOLCHAIN, Classifier
from bisector.probe.objects import ObjectOwners, object_site


class Managed:  # a managed __dict__: CPython 3.11 puts a pre-header before it (objects.py)
    pass


def test_the_allocation_site_of_an_object_with_a_pre_header_is_found() -> None:
    tracemalloc.start(1)
    try:
        obj = Managed()
        site = object_site(obj)
    finally:
        tracemalloc.stop()
    assert site is not None and site[0][0] == __file__


TOOL_FILE = "/venv/lib/python3.11/site-packages/torch/onnx/_internal/fake.py"
KEPT: list = []  # a module global of this (the model's) file


def _make_in_torch(n: int) -> tuple:
    """Objects allocated with a toolchain file as the innermost frame."""
    code = compile("out = tuple([Managed() for _ in range(n)])", TOOL_FILE, "exec")
    scope = {"Managed": Managed, "n": n}
    exec(code, scope)
    return scope["out"]


def test_objects_are_owned_by_their_holder_else_where_they_were_allocated(tmp_path) -> None:
    import os

    classifier = Classifier([os.path.dirname(__file__)])
    model = type("Model", (), {})()
    owners = ObjectOwners(model, lambda: ([__import__(__name__, fromlist=["x"])], []), classifier)
    native_held: list = []
    tracemalloc.start(1)
    try:
        owners.begin()
        native_held.append(_make_in_torch(3))  # stands for C state no survey names
        KEPT.extend(_make_in_torch(2))  # allocated in "torch", held by the model's global
        out = owners.end(calls=1)
    finally:
        tracemalloc.stop()
        KEPT.clear()
    assert out["per_call"][MODEL] >= 2, out
    assert any("KEPT" in s["where"] for s in out["sites"][MODEL]), out
    assert out["per_call"][TOOLCHAIN] >= 1, out
    assert any("fake.py" in s["where"] for s in out["sites"][TOOLCHAIN]), out


def test_the_models_container_entries_are_counted_in_its_globals_and_attributes() -> None:
    import types

    from torch import nn

    from bisector.probe.objects import model_entries

    mod = types.ModuleType("m")
    mod.SEEN = [1, 2]
    net = nn.Sequential(nn.Linear(2, 2))
    net.history = [0]
    before = model_entries(net, [mod])
    mod.SEEN.append(3)
    net[0].register_forward_hook(lambda *a: None)
    assert model_entries(net, [mod]) == before + 2
