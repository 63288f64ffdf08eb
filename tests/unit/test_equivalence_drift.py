"""Outputs compared for a fix whose original drifts: a leak that feeds back into the outputs (a
pre-hook registered per call, each scaling the input again) makes the original's later calls
differ from its first; a fix that registers the hook once is compared on each shape's first call,
and only then. In-process: run_equivalence on two model files."""

from __future__ import annotations

from pathlib import Path

import torch

from bisector.model.schedule import PROFILES, build_schedule
from bisector.model.spec import ModelSpec, build_input_plan
from bisector.probe.equivalence import run_equivalence
from bisector.probe.loading import build_model, load_namespace
from bisector.probe.types import EquivalenceRequest, ProbeKind, ProbeOptions, ProbeRequest

PILED = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.gate = torch.nn.Linear(4, 1)

    def forward(self, x):
        scale = torch.sigmoid(self.gate(x)).mean() + 0.5

        def inject(module, args):
            return (args[0] * scale,)

{register}
        return self.proj(x){tail}
"""
PER_CALL = "        self.proj.register_forward_pre_hook(inject)"
ONCE = (
    "        if getattr(self, '_h', None) is not None:\n            self._h.remove()\n"
    "        self._h = self.proj.register_forward_pre_hook(inject)"
)


def _compare(tmp_path: Path, original: str, candidate: str) -> dict:
    (tmp_path / "a.py").write_text(original)
    (tmp_path / "b.py").write_text(candidate)
    plan = build_input_plan(["x=B,4"], ["B=1:4"])
    spec = ModelSpec(str(tmp_path / "a.py"), "Net")
    other = EquivalenceRequest(ModelSpec(str(tmp_path / "b.py"), "Net"), ProbeOptions(), "eager", 1e-4, 1e-5)
    schedule = build_schedule(plan.dims, PROFILES["eager"])
    req = ProbeRequest(spec, plan, None, schedule, ProbeOptions(), kind=ProbeKind.EQUIVALENCE, equivalence=other)
    namespace = load_namespace(spec)
    torch.manual_seed(schedule.seed)
    model = build_model(spec, namespace).eval()
    return run_equivalence(req, model, namespace, "cpu", tmp_path)


def test_a_hook_registered_once_matches_the_piling_original_on_each_first_call(tmp_path: Path) -> None:
    got = _compare(tmp_path, PILED.format(register=PER_CALL, tail=""), PILED.format(register=ONCE, tail=""))
    assert got["equivalent"] and got["mode"] == "eager-first-call" and "drift" in got["drift"]


def test_a_candidate_that_changes_the_first_call_too_is_not_equivalent(tmp_path: Path) -> None:
    got = _compare(tmp_path, PILED.format(register=PER_CALL, tail=""), PILED.format(register=ONCE, tail=" * 2"))
    assert not got["equivalent"] and got["mode"] == "eager"


def test_an_original_that_does_not_drift_is_compared_call_after_call(tmp_path: Path) -> None:
    got = _compare(tmp_path, PILED.format(register=ONCE, tail=""), PILED.format(register=ONCE, tail=" + 1e-2"))
    assert not got["equivalent"] and got["mode"] == "eager" and "drift" not in got
