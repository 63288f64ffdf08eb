import json

from bisector.fixers import base

from bisector.judge import search, verdict
from bisector.lab import results
from bisector.model.kinds import SEVERITY, Kind, severity, worst


def test_kinds_are_their_strings() -> None:
    assert Kind.LEAK == "leak" and Kind.SHAPE_GROWTH == "shape-growth" and Kind.UNSUPPORTED_OP == "unsupported-op"
    assert str(Kind.TOOLCHAIN_LEAK) == "toolchain-leak" and f"{Kind.CRASHED}" == "crashed"
    assert Kind("failed") is Kind.FAILED
    # Reports are JSON: a kind writes as its plain string, as a value and as a key.
    doc = {"verdict": Kind.LEAK, "stages": {Kind.CLEAN: [Kind.INCONCLUSIVE]}}
    assert json.dumps(doc) == json.dumps({"verdict": "leak", "stages": {"clean": ["inconclusive"]}})
    # Kinds read back from JSON are plain strings: lookups and comparisons still match.
    assert {Kind.LEAK: 1}["leak"] == 1 and "shape-growth" in search.BAD_KINDS


def test_severity_order() -> None:
    order = [Kind.LEAK, Kind.SHAPE_GROWTH, Kind.FAILED, Kind.INCONCLUSIVE, Kind.TOOLCHAIN_LEAK, Kind.CLEAN]
    assert [k.severity for k in order] == sorted((k.severity for k in order), reverse=True)
    assert len({k.severity for k in order}) == len(order)
    assert Kind.CRASHED.severity == Kind.FAILED.severity
    assert set(SEVERITY) == set(Kind)  # every kind is ranked
    assert severity("leak") == 3 and severity("no-such-kind") == 0


def test_worst() -> None:
    assert worst([Kind.CLEAN, Kind.INCONCLUSIVE, Kind.CRASHED]) == Kind.CRASHED
    assert worst(["clean", "shape-growth", "failed"]) == "shape-growth"
    assert worst([Kind.TOOLCHAIN_LEAK, Kind.CLEAN]) == Kind.TOOLCHAIN_LEAK
    assert worst([]) is Kind.CLEAN


def test_old_names_are_the_members() -> None:
    assert verdict.LEAK is Kind.LEAK and verdict.TOOLCHAIN_LEAK is Kind.TOOLCHAIN_LEAK and verdict.worst is worst
    assert results.FAILED is Kind.FAILED and results.CRASHED is Kind.CRASHED
    # Fixers import nothing from bisector but bisector.fixers and bisector.model.choices
    # (test_architecture.py): their base spells the kinds it needs, and they must be these.
    assert (base.LEAK, base.SHAPE_GROWTH, base.UNSUPPORTED_OP) == (Kind.LEAK, Kind.SHAPE_GROWTH, Kind.UNSUPPORTED_OP)
