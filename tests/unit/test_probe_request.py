"""Probe requests cross a process boundary as JSON: every kind comes back as it went."""

from __future__ import annotations

import json

import pytest

from bisector.model.schedule import PROFILES, build_schedule
from bisector.model.spec import ModelSpec, build_input_plan
from bisector.probe.types import EquivalenceRequest, ProbeKind, ProbeOptions, ProbeRequest

PLAN = build_input_plan(["x=B,8"], ["B=1:4"])
SCHEDULE = build_schedule(PLAN.dims, PROFILES["eager"])
MODEL = ModelSpec("/src/m.py", "Net")


def _through_json(request: ProbeRequest) -> ProbeRequest:
    return ProbeRequest.from_json(json.loads(json.dumps(request.to_json())))


def test_a_measurement_round_trips() -> None:
    options = ProbeOptions(exporter="dynamo")
    request = ProbeRequest(MODEL, PLAN, "export", SCHEDULE, options, regions=("a", "b"), label="x")
    back = _through_json(request)
    assert back == request
    assert back.kind is ProbeKind.MEASURE and back.tag == "export" and back.key() == request.key()
    assert request.to_json()["kind"] == "measure" and request.to_json()["equivalence"] is None


def test_an_equivalence_request_round_trips_typed() -> None:
    candidate = EquivalenceRequest(
        ModelSpec("/tmp/edited/m.py", "Net"),
        ProbeOptions(post_export=("onnxsim",), session_options={"a": 1}),
        mode="onnx",
        rtol=1e-2,
        atol=1e-3,
    )
    request = ProbeRequest(
        MODEL, PLAN, None, SCHEDULE, label="outputs", kind=ProbeKind.EQUIVALENCE, equivalence=candidate
    )
    back = _through_json(request)
    assert back == request
    assert isinstance(back.equivalence, EquivalenceRequest) and back.equivalence.options.post_export == ("onnxsim",)
    assert back.kind is ProbeKind.EQUIVALENCE and back.stage is None and back.tag == "equivalence"
    assert request.to_json()["equivalence"]["mode"] == "onnx"


@pytest.mark.parametrize("kind", [ProbeKind.CAPTURE, ProbeKind.NOOP])
def test_probes_that_run_no_stage_round_trip(kind: ProbeKind) -> None:
    request = ProbeRequest(MODEL, PLAN, None, SCHEDULE, capture="/tmp/capture", kind=kind)
    back = _through_json(request)
    assert back == request and back.kind is kind and back.tag == str(kind)


def test_the_key_ignores_the_label_and_tells_kinds_and_candidates_apart() -> None:
    base = ProbeRequest(MODEL, PLAN, None, SCHEDULE, kind=ProbeKind.CAPTURE)
    assert base.with_(label="other").key() == base.key()
    eq = EquivalenceRequest(MODEL, ProbeOptions())
    a = ProbeRequest(MODEL, PLAN, None, SCHEDULE, kind=ProbeKind.EQUIVALENCE, equivalence=eq)
    b = a.with_(equivalence=EquivalenceRequest(MODEL, ProbeOptions(), mode="onnx"))
    assert len({base.key(), a.key(), b.key()}) == 3


def test_a_kind_given_as_a_string_is_the_member() -> None:
    request = ProbeRequest(MODEL, PLAN, None, SCHEDULE, kind="capture")  # type: ignore[arg-type]
    assert request.kind is ProbeKind.CAPTURE


@pytest.mark.parametrize(
    "stage, kind, equivalence",
    [
        ("capture", ProbeKind.MEASURE, None),  # the old spelling: a kind passed as the stage
        (None, ProbeKind.MEASURE, None),
        ("eager", ProbeKind.CAPTURE, None),
        (None, ProbeKind.EQUIVALENCE, None),
        ("eager", ProbeKind.MEASURE, EquivalenceRequest(MODEL, ProbeOptions())),
    ],
)
def test_inconsistent_requests_are_refused(stage, kind, equivalence) -> None:
    with pytest.raises(ValueError):
        ProbeRequest(MODEL, PLAN, stage, SCHEDULE, kind=kind, equivalence=equivalence)
