"""`bisector find` as a user runs it: the tree, JSON with culprits, resuming from the run dir."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FIXTURES, SAMPLES, run_cli

pytestmark = pytest.mark.probe


def test_find_json_names_the_culprit_and_a_rerun_reuses_every_probe(tmp_path) -> None:
    # No --input: the inputs are inferred (and printed as flags), then searched as if given.
    args = (
        "find",
        f"{SAMPLES / 'list_append.py'}:Net",
        "-s",
        "eager",
        "--json",
        "--run-dir",
        str(tmp_path),
    )
    r = run_cli(*args)
    assert r.returncode == 1, r.stderr
    assert "inputs inferred: --input x=B,32 (from blocks.0: Linear(32, 32))" in r.stderr.splitlines()
    report = json.loads(r.stdout)
    assert report["culprits"] == [
        {
            "region": "blocks.1",
            "stage": "eager",
            "kind": "leak",
            "growth_bytes_per_call": report["culprits"][0]["growth_bytes_per_call"],
            "growth_bytes_per_new_shape": report["culprits"][0]["growth_bytes_per_new_shape"],
            "own_code": True,
            "objects_per_call": 1.0,
            "objects_per_new_shape": report["culprits"][0]["objects_per_new_shape"],
            "bounded": None,
            "type": "Recorder",
            "grown_types": report["culprits"][0]["grown_types"],
            "hint": report["culprits"][0]["hint"],
            # The bytes figure: the exact tensor meter's (the list keeps tensors), else the heap's.
            "growth_metric": report["culprits"][0]["growth_metric"],
            "decided_by": "objects",  # the object count settled it (bundle charts draw that metric)
            "floor_bytes_per_call": report["culprits"][0]["floor_bytes_per_call"],
            "owners": None,  # objects grew: the model's, no traced probe needed
            "retention": report["culprits"][0]["retention"],
        }
    ]
    assert "torch.Tensor" in report["culprits"][0]["grown_types"]
    assert report["culprits"][0]["growth_metric"] in ("tensors", "heap")
    (held,) = report["culprits"][0]["retention"]  # what holds it: Recorder's list, and its lines
    assert (held["path"], held["container"], held["entries_per_call"]) == ("blocks.1.history", "list", 1.0)
    assert held["defined_at"] == "sample_models/list_append.py:20"
    assert held["mutated_at"] == ["sample_models/list_append.py:24"]
    assert report["probes"] >= 3 and report["stages"]["eager"]["verdict"] == "leak"
    assert report["stages"]["eager"]["samples"], "find --json extends the measure report, samples included"
    assert report["complete"] is True
    again = run_cli(*args)
    assert again.returncode == 1
    second = json.loads(again.stdout)
    assert second["probes"] == 0 and second["reused_probes"] >= 3
    # The control came from the control cache: counted apart (reused_probes keeps schema 1's meaning).
    assert second["reused_controls"] >= 1
    assert second["culprits"] == report["culprits"]


def test_find_on_a_model_it_cannot_infer_lists_what_it_tried(tmp_path) -> None:
    r = run_cli("find", f"{FIXTURES / 'inference.py'}:TwoInputs", "--stage", "eager", "--run-dir", str(tmp_path))
    assert r.returncode == 2
    assert "no inputs given, and none could be inferred (tried: bisector_inputs hook: none in inference.py;" in r.stderr
    assert "first layer: forward takes 2 inputs (x, y)" in r.stderr
    assert "--input NAME=DIMS[:DTYPE[:LOW:HIGH]]" in r.stderr


def test_find_prints_a_tree_down_to_the_culprit(tmp_path) -> None:
    r = run_cli(
        "find",
        f"{SAMPLES / 'symbolic_leak.py'}:Net",
        "-i",
        "x=B,32",
        "--exporter",
        "torchscript",
        "-s",
        "export",
        "--run-dir",
        str(tmp_path),
    )
    assert r.returncode == 1, r.stderr
    out = r.stdout
    assert "<root>" in out and "blocks  Sequential" in out and "blocks.0  Block" in out
    assert "blocks.0.act  ScaledGelu  leak" in out and "← culprit" in out
    assert "next:" in out and "symbolic" in out
    assert "culprits: blocks.0.act (export)" in out


def test_clean_model_has_no_culprits(tmp_path) -> None:
    r = run_cli(
        "find",
        f"{SAMPLES / 'clean_cnn.py'}:Net",
        "-i",
        "x=B,3,H,W",
        "-d",
        "B=1:4",
        "-d",
        "H=8:32",
        "-d",
        "W=8:32",
        "-s",
        "eager",
        "--json",
        "--run-dir",
        str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["culprits"] == []


def test_region_that_crashes_is_reported_and_the_search_goes_on(tmp_path) -> None:
    r = run_cli(
        "find",
        f"{FIXTURES / 'regions.py'}:CrashingBranch",
        "-i",
        "x=B,8",
        "-s",
        "eager",
        "--json",
        "--run-dir",
        str(tmp_path),
    )
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert [c["region"] for c in report["culprits"]] == ["keeper"]
    unprobeable = {u["region"]: u["reason"] for u in report["search"]["eager"]["unprobeable"]}
    assert "bomb" in unprobeable and "SIGSEGV" in unprobeable["bomb"]


def test_ctrl_c_keeps_what_finished_and_a_rerun_resumes(tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    args = [
        sys.executable,
        "-m",
        "bisector",
        "find",
        f"{SAMPLES / 'hf_bert.py'}:LeakyNet",
        "-i",
        "ids=B,T:int64:0:1000",
        "-d",
        "B=1:4",
        "-d",
        "T=5:64",
        "-s",
        "eager",
        "--json",
        "--run-dir",
        str(tmp_path),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = tmp_path / "runs"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(results.rglob("results/eager-*.json"))) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (1, 4, 130), err
    kept = len(list(results.rglob("results/eager-*.json")))
    assert kept >= 3
    again = run_cli(*args[3:])
    assert again.returncode == 1, again.stderr
    report = json.loads(again.stdout)
    assert report["reused_probes"] >= 3 and report["complete"]
    assert [c["region"] for c in report["culprits"]] == ["model.encoder.layer.1.intermediate.intermediate_act_fn"]
