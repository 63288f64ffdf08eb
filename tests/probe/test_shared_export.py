"""One export for the whole model's inference probes of a run (lab/exports.py): made once by an
export-file probe, loaded by the verdict's probes and by every candidate that exports alike; a
candidate that changes the export gets its own; a model that cannot export fails as it did; a
rerun whose probes all come from the run's cache exports nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from bisector.lab.results import MeasureOptions
from bisector.lab.runner import Events
from bisector.lab.stage import Lab
from bisector.model.spec import ModelSpec, build_input_plan
from bisector.probe.types import ProbeOptions

pytestmark = pytest.mark.probe

NET = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(6, 4)

    def forward(self, x):
        {guard}return torch.relu(self.proj(x))
"""
REFUSES = "if torch.onnx.is_in_onnx_export():\n            raise RuntimeError('Net refuses export')\n        "


class Labels(Events):
    def __init__(self) -> None:
        self.started: list[str] = []

    def probe_started(self, label: str) -> None:
        self.started.append(label)


def _lab(tmp_path: Path, pool, guard: str = "", cache: str = "") -> tuple[Lab, Labels]:
    (tmp_path / "net.py").write_text(NET.format(guard=guard))
    spec = ModelSpec(str(tmp_path / "net.py"), "Net")
    plan = build_input_plan(["x=B,T,6"], ["B=1:3", "T=2:12"])
    options = MeasureOptions(
        stages=("inference",),
        probe=ProbeOptions(exporter="torchscript"),
        jobs=2,
        cache_dir=cache,
        retries=0,
        floor_targets={},
    )
    events = Labels()
    return Lab(spec, plan, options, events, run_dir=tmp_path / "run", pool=pool), events


def test_the_verdict_and_a_runtime_only_candidate_load_one_export(tmp_path: Path, pool) -> None:
    lab, events = _lab(tmp_path, pool)
    try:
        root = lab.stage("inference")
        assert root.curve is not None and root.curve.meta.get("shared_export") is True
        assert root.control is not None and not root.control.meta.get("shared_export")  # the control exports
        candidate = lab.derive(overrides={"session_options": {"enable_mem_pattern": False}})
        again = candidate.stage("inference")
        assert again.curve is not None and again.curve.meta.get("shared_export") is True
        assert events.started.count("inference export") == 1, events.started
        # A candidate that changes what reaches the exporter has its own file.
        other = lab.derive(overrides={"export_kwargs": {"do_constant_folding": False}})
        assert other.stage("inference").curve.meta.get("shared_export") is True
        assert events.started.count("inference export") == 2, events.started
        files = sorted((Path(pool.workdir) / "exports").glob("*/model.onnx"))
        assert len(files) >= 2 and not list((Path(pool.workdir) / "exports").glob("*.tmp"))
    finally:
        lab.close()


def test_a_model_that_cannot_export_fails_its_stage_saying_why(tmp_path: Path, pool) -> None:
    lab, events = _lab(tmp_path, pool, guard=REFUSES)
    try:
        result = lab.stage("inference")
    finally:
        lab.close()
    assert result.verdict is None and "Net refuses export" in result.failure.message
    assert "inference export" in events.started  # tried once, then the probe exported itself


def test_a_rerun_from_the_run_cache_exports_nothing(tmp_path: Path, pool) -> None:
    cache = str(tmp_path / "cache")
    first, _ = _lab(tmp_path, pool, cache=cache)
    try:
        kind = first.stage("inference").kind
    finally:
        first.close()
    second, events = _lab(tmp_path, pool, cache=cache)
    try:
        assert second.stage("inference").kind == kind
    finally:
        second.close()
    assert events.started == []  # every probe reused: no export made for nothing
