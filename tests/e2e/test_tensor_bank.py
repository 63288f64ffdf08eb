"""A model whose only growth is one tensor gaining a 256-float row per call (sample_models/tensor_bank.py):
`find` calls it a leak at `memory`, on the exact tensor meter, held by `memory.bank`; `fix` keeps the
tensor-bank bound, and the patched model's bank stops at the bound with its newest rows."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from bisector import api
from bisector.pipeline import run as pipeline
from tests.conftest import SAMPLES, run_cli

pytestmark = pytest.mark.probe
SPEC = f"{SAMPLES / 'tensor_bank.py'}:Net"


def test_find_names_the_bank_as_a_leak_on_the_tensor_meter(tmp_path) -> None:
    r = run_cli("find", SPEC, "-i", "x=B,64", "-d", "B=1:8", "-s", "eager", "--run-dir", str(tmp_path), "--json")
    assert r.returncode == 1, r.stderr  # checked against the schema by run_cli
    data = json.loads(r.stdout)
    assert data["stages"]["eager"]["verdict"] == "leak"
    (culprit,) = data["culprits"]
    assert (culprit["region"], culprit["stage"], culprit["kind"]) == ("memory", "eager", "leak")
    assert (culprit["growth_metric"], culprit["decided_by"]) == ("tensors", "tensors")
    assert culprit["growth_bytes_per_call"] == 256 * 4  # one row, exactly
    top = culprit["retention"][0]
    assert (top["path"], top["container"]) == ("memory.bank", "Tensor")


def test_fix_keeps_a_bound_on_the_bank_and_its_newest_rows(pool, tmp_path) -> None:
    p = api.prepare(SPEC, ["x=B,64"], ["B=1:8"], stages=["eager"], run_dir=str(tmp_path))
    outcome = pipeline.fix(p, pipeline.FixRequest(patch=False), pool=pool)
    kept = outcome.report.kept
    assert kept and kept[0].fixer == "tensor-bank" and kept[0].region == "memory", [
        (e.fixers, e.reason) for e in outcome.report.evaluations
    ]
    best = kept[0]
    assert best.after["kind"] == "clean" and best.equivalent
    (edit,) = best.edits
    assert "self.bank = self.bank[-_BISECTOR_KEEP_ROWS:]" in edit.after
    assert (SAMPLES / "tensor_bank.py").read_text() == edit.before  # the user's file untouched

    patched = tmp_path / "patched_bank.py"
    patched.write_text(edit.after)
    spec = importlib.util.spec_from_file_location("patched_bank", patched)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.Net().eval()
    xs = [torch.randn(3, 64) for _ in range(20)]
    with torch.no_grad():
        for x in xs:
            net(x)
        newest = [torch.nn.functional.normalize(net.encoder(x).mean(dim=0, keepdim=True), dim=1) for x in xs[-8:]]
    bank = net.memory.bank
    assert bank.shape == (module._BISECTOR_KEEP_ROWS, 256)
    assert torch.allclose(bank, torch.cat(newest))  # the newest rows, oldest first, as before the fix
    assert "memory.bank" in dict(net.named_buffers())  # still a buffer: state_dict and .to() carry it


def test_apply_with_one_repeated_shape_is_confirmed_past_the_bound(tmp_path) -> None:
    """B=1:2 repeats one shape: the schedule's own warm-up is two calls, far short of the bound's 8
    rows. The kept fix and the re-measurement after --apply both warm up past the bound."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'bank-copy'\n")
    model = project / "tensor_bank.py"
    model.write_text((SAMPLES / "tensor_bank.py").read_text())
    args = ("fix", f"{model}:Net", "-i", "x=B,64", "-d", "B=1:2", "-s", "eager", "--apply")
    r = run_cli(*args, "--run-dir", str(tmp_path / "run"), "--json", cwd=project)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    data = json.loads(r.stdout)
    assert data["confirmed"]["stages"]["eager"]["verdict"] == "clean", data["confirmed"]
    assert "self.bank = self.bank[-_BISECTOR_KEEP_ROWS:]" in model.read_text()
