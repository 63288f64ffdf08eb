"""The versioned JSON contract (issue 13, item 3): the stamp every report carries, the schema that
ships in the package, and what the schema accepts and refuses."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from importlib import metadata
from typing import Any

import jsonschema
import pytest

from bisector import __version__
from bisector.common.contract import REPORT_KINDS, SCHEMA_VERSION, schema, schema_text, stamp, toolchain_versions
from tests.conftest import run_cli
from tests.contract import check_cli_output, contract_errors


def _stage(kind: str = "clean") -> dict[str, Any]:
    return {
        "verdict": kind,
        "growth_bytes_per_call": 0.0,
        "growth_bytes_per_new_shape": 0.0,
        "baseline_bytes_per_call": 0.0,
        "baseline_bytes_per_new_shape": 0.0,
        "noise_bytes": 10.0,
        "attempts": 1,
        "probes": 2,
        "samples": [{"phase": "repeat", "dims": {"B": 2}, "rss": 1.0, "heap": 2.0}],
    }


def _measure() -> dict[str, Any]:
    return {
        "spec": "net.py:Net",
        "model": {"path": "/p/net.py", "name": "Net", "init_kwargs": {}},
        "inputs": "x=B,8",
        "dims": {"B": [1, 4]},
        "verdict": "leak",
        "stages": {"eager": _stage("leak"), "export": _stage()},
        "bands": {"rss": 5e6, "gpu": 2e8},
        "probes": 4,
        "wall_s": 1.5,
    }


def _culprit() -> dict[str, Any]:
    return {
        "region": "blocks.1",
        "stage": "eager",
        "kind": "leak",
        "growth_bytes_per_call": 472.0,
        "growth_bytes_per_new_shape": 0.0,
        "own_code": True,
        "type": "Recorder",
        "hint": "clear it",
    }


def _find() -> dict[str, Any]:
    search = {
        "root": "leak",
        "culprits": [_culprit()],
        "unprobeable": [],
        "inconclusive": [],
        "tested": [{"regions": [""], "kind": "leak"}],
        "complete": True,
    }
    return {
        **_measure(),
        "culprits": [_culprit()],
        "search": {"eager": search},
        "modules": 6,
        "reused_probes": 0,
        "run_dir": "/p/.bisector/runs/net",
        "complete": True,
    }


def _evaluation() -> dict[str, Any]:
    return {
        "fixer": "python-leaks",
        "summary": "trim",
        "region": "blocks.1",
        "stage": "eager",
        "before_kind": "leak",
        "after_kind": "clean",
        "equivalent": True,
        "changes_outputs": False,
        "kept": True,
        "reason": "kept",
        "probe": {},
        "edits": [{"path": "/p/net.py", "summary": "trim"}],
    }


def _fix() -> dict[str, Any]:
    return {
        **_find(),
        "fixes": [_evaluation()],
        "patches": [{"path": "net.py", "summary": "trim", "diff": "--- a\n"}],
        "patch_notes": [],
        "check": "no patch",
    }


def _repair() -> dict[str, Any]:
    model = {
        "name": "net-Net",
        "spec": "net.py:Net",
        "status": "fixed",
        "verdict": "leak",
        "culprits": [_culprit()],
        "kept": [_evaluation()],
        "patch": None,
        "error": "",
        "wall_s": 3.0,
        "probes": 9,
        "resumed": False,
        "stages": {"eager": "leak"},
        "patches": ["net.py.patch"],
        "check": "no patch",
    }
    return {"models": [model], "out": ".bisector/repair", "wall_s": 3.0, "counts": {"fixed": 1}}


REPORTS = {"measure": _measure, "find": _find, "fix": _fix, "repair": _repair}


def test_the_schema_is_valid_draft_2020_12_and_ships_as_package_data() -> None:
    data = schema()
    jsonschema.Draft202012Validator.check_schema(data)
    assert data["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert data["properties"]["schema_version"] == {"const": SCHEMA_VERSION}
    assert set(data["properties"]["report_kind"]["enum"]) == set(REPORT_KINDS)
    for name in ("stage_result", "verdict_kind", "culprit", "evaluation", "patch", "repair_summary"):
        assert name in data["$defs"]


def test_stamp_puts_the_contract_first_and_keeps_the_report() -> None:
    out = stamp({"spec": "net.py:Net", "verdict": "clean"}, "measure")
    assert list(out)[:4] == ["schema_version", "report_kind", "bisector_version", "versions"]
    assert out["schema_version"] == SCHEMA_VERSION and out["bisector_version"] == __version__
    assert out["spec"] == "net.py:Net" and out["verdict"] == "clean"
    assert set(out["versions"]) >= {"torch", "onnx", "onnxruntime"}
    # The stamp wins over a key of the same name (the stored document names the version already).
    assert stamp({"report_kind": "fix", "bisector_version": "0.0"}, "find")["report_kind"] == "find"
    with pytest.raises(ValueError):
        stamp({}, "summary")


def test_stamped_reports_do_not_share_the_versions_dict() -> None:
    a, b = stamp({}, "measure"), stamp({}, "find")
    a["versions"]["torch"] = "changed"
    assert b["versions"]["torch"] != "changed"


def test_versions_come_from_metadata_without_importing_torch() -> None:
    code = (
        "import sys, json\nfrom bisector.common.contract import toolchain_versions\nv = toolchain_versions()\n"
        "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules\nprint(json.dumps(v))"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    assert out["torch"] == metadata.version("torch")
    assert out["onnx"] == metadata.version("onnx")
    assert out["onnxruntime"] == metadata.version(out["onnxruntime_distribution"])
    assert out == toolchain_versions()


@pytest.mark.parametrize("kind", REPORT_KINDS)
def test_every_kind_of_report_validates(kind: str) -> None:
    assert contract_errors(stamp(REPORTS[kind](), kind)) == []


@pytest.mark.parametrize("kind", REPORT_KINDS)
def test_fields_may_be_added_anywhere(kind: str) -> None:
    data = stamp({**REPORTS[kind](), "a_new_field": {"x": 1}}, kind)
    data["versions"]["cuda"] = "12.8"
    assert contract_errors(data) == []


@pytest.mark.parametrize(
    ("kind", "path", "message"),
    [
        ("measure", ("stages",), "'stages' is a required property"),
        ("measure", ("stages", "eager", "growth_bytes_per_call"), "'growth_bytes_per_call' is a required property"),
        ("find", ("culprits", 0, "region"), "'region' is a required property"),
        ("find", ("search",), "'search' is a required property"),
        ("fix", ("fixes",), "'fixes' is a required property"),
        ("fix", ("fixes", 0, "kept"), "'kept' is a required property"),
        ("fix", ("patches", 0, "diff"), "'diff' is a required property"),
        ("repair", ("models", 0, "status"), "'status' is a required property"),
        ("repair", ("counts",), "'counts' is a required property"),
    ],
)
def test_a_removed_field_breaks_the_contract(kind: str, path: tuple[Any, ...], message: str) -> None:
    data = stamp(REPORTS[kind](), kind)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    assert any(message in e for e in contract_errors(data)), contract_errors(data)


def test_unknown_values_and_versions_are_refused() -> None:
    data = stamp(_find(), "find")
    bad = copy.deepcopy(data)
    bad["stages"]["eager"]["verdict"] = "leaky"
    assert contract_errors(bad)
    bad = copy.deepcopy(data)
    bad["stages"]["training"] = _stage()
    assert contract_errors(bad)
    bad = copy.deepcopy(data)
    bad["schema_version"] = SCHEMA_VERSION + 1
    assert contract_errors(bad)
    bad = copy.deepcopy(data)
    del bad["versions"]
    assert contract_errors(bad)
    assert contract_errors({k: v for k, v in data.items() if k != "schema_version"})


def test_the_schema_command_prints_the_shipped_schema() -> None:
    r = run_cli("schema")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads(schema_text())


def test_cli_outputs_are_checked_only_for_reports() -> None:
    check_cli_output(("fixers", "--json"), '[{"name": "python-leaks"}]')  # a listing, not a report
    check_cli_output(("measure", "x.py:Net"), "not json")  # no --json
    check_cli_output(("find", "--json"), "")  # printed nothing: the test's own asserts say why
    with pytest.raises(AssertionError, match="breaks the JSON contract"):
        check_cli_output(("measure", "x.py:Net", "--json"), json.dumps(_measure()))  # no stamp
    check_cli_output(("merge", "a", "--json"), json.dumps(stamp(_repair(), "repair")))
