"""What a repro bundle is made for (a culprit, or the whole model in a stage) and what one is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bisector.fixers.base import UNSUPPORTED_OP
from bisector.model.kinds import Kind


@dataclass(frozen=True)
class BundleTarget:
    stage: str
    region: str
    kind: str
    figures: Mapping[str, Any]  # growth figures as in the JSON (bytes, objects, floor, metric)
    samples: Sequence[Mapping[str, Any]] = ()
    control_samples: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class Bundle:
    target: BundleTarget
    path: Path
    error: str = ""
    onnx_detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.target.stage,
            "region": self.target.region,
            "path": str(self.path),
            "error": self.error,
            "onnx_detail": dict(self.onnx_detail),
        }


def report_parts(report: Any) -> tuple[Any, Any]:
    """(MeasureReport, FindReport or None) of any report."""
    if hasattr(report, "evaluations"):
        return report.find.measure, report.find
    if hasattr(report, "searches"):
        return report.measure, report
    return report, None


def targets_of(report: Any, unfixed_only: bool = False) -> list[BundleTarget]:
    """Every culprit (those without a kept fix when unfixed_only); with no culprit, the whole model
    in each stage that is not clean, or in its first stage (a clean model's flat repro)."""

    measure, find = report_parts(report)
    out = []
    if find is not None:
        for c in find.culprits:
            if c.kind == UNSUPPORTED_OP:
                continue  # nothing to loop: the stage never ran
            if unfixed_only and hasattr(report, "fixed") and report.fixed(c):
                continue
            out.append(
                BundleTarget(
                    c.stage,
                    c.region,
                    c.kind,
                    c.to_json(),
                    c.figures.samples or (),
                    c.figures.control_samples or (),
                )
            )
        if out or unfixed_only or find.culprits:
            return out
    stages = [(s, r) for s, r in measure.stages.items() if r.curve is not None]
    bad = [(s, r) for s, r in stages if r.kind != Kind.CLEAN]
    for s, r in bad or stages[:1]:
        data = r.to_json()
        out.append(BundleTarget(s, "", r.kind, data, data.get("samples") or (), data.get("control_samples") or ()))
    return out
