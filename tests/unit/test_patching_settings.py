"""The one default exporter and the one definition of which input axes vary, as every user of them
sees them: the patch writer, the probe and the fixers."""

from __future__ import annotations

from dataclasses import replace

from bisector.model.spec import build_input_plan
from bisector.patching.settings import (
    DEFAULT_EXPORTER,
    dynamic_dims_by_input,
    installed_default_exporter,
    varying_axes,
)

PLAN = build_input_plan(["x=B,3,H,W", "ids=B,T:int64:0:100"], ["B=1:16", "H=5:100", "W=32:32", "T=7:7"])


def test_an_axis_varies_when_its_symbol_has_a_range() -> None:
    # W and T are one size each: exported static, never padded or guarded.
    assert varying_axes(PLAN) == [{0: "B", 2: "H"}, {0: "B"}]
    assert dynamic_dims_by_input(PLAN) == {"x": {0: "B", 2: "H"}, "ids": {0: "B"}}
    fixed = build_input_plan(["x=B,3"], ["B=4:4"])
    assert varying_axes(fixed) == [{}] and dynamic_dims_by_input(fixed) == {}


def test_hook_inputs_and_no_plan_have_no_axes_to_go_by() -> None:
    hooked = replace(PLAN, use_hook=True)
    assert varying_axes(hooked) == [] and dynamic_dims_by_input(hooked) == {}
    assert varying_axes(None) == [] and dynamic_dims_by_input(None) == {}


def test_the_default_exporter_is_the_one_every_place_uses() -> None:
    from bisector.model.spec import ModelSpec
    from bisector.patching.new_file import new_export_file
    from bisector.patching.settings import Settings
    from bisector.probe.export import resolve_exporter
    from fixers.base import FixTarget

    assert FixTarget("inference", "leak").exporter == DEFAULT_EXPORTER
    assert resolve_exporter("torchscript") == "torchscript"
    assert resolve_exporter(None) == installed_default_exporter() == DEFAULT_EXPORTER  # torch >= 2.9 here
    text = new_export_file("/tmp", ModelSpec("/tmp/net.py", "Net"), PLAN, Settings(bounded_dims={"B": [1, 16]})).after
    assert f"dynamo={DEFAULT_EXPORTER == 'dynamo'}" in text and "dynamic_shapes=" in text
