"""A bundle's ISSUE.md, for the tracker that owns the growth: laid out as pytorch's bug template
(eager, export) or onnxruntime's (inference) when the toolchain keeps it, else for the team's own
tracker, with no upstream template and no request to torch or ONNX Runtime."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from bisector.common.units import format_bytes
from bisector.common.units import per as step_of
from bisector.judge.retention import describe
from bisector.model.kinds import Kind
from bisector.reports.base import render_text
from bisector.reports.targets import BundleTarget

REPRO = (
    "```\nunzip bundle.zip && cd bundle\npip install torch onnxruntime psutil numpy\n"
    "python repro.py   # prints RSS, C heap and live objects every N calls\n```\n"
    "`repro.py` rebuilds the region from `model/` (or loads `model.onnx`), feeds the recorded inputs "
    "(`inputs.npz`) and repeats the call. `curves.png` is the curve measured in an isolated process "
    "against a trivial control module run the same way."
)


def measured_text(t: BundleTarget) -> str:
    """The growth in one line: "leak: +2.1 MB/call (heap), +1.0 live objects/call"."""
    per = step_of(t.stage)
    f = t.figures
    bits = []
    if t.kind == Kind.SHAPE_GROWTH:
        bits.append(f"{format_bytes(f.get('growth_bytes_per_new_shape'), True)}/new shape")
    else:
        bits.append(f"{format_bytes(f.get('growth_bytes_per_call'), True)}/{per} ({f.get('growth_metric') or 'rss'})")
    if f.get("objects_per_call"):
        bits.append(f"{f['objects_per_call']:+.1f} live objects/{per}")
    return f"{t.kind}: " + ", ".join(bits)


def upstream(t: BundleTarget) -> bool:
    """Whether the growth is the toolchain's (torch's or ONNX Runtime's own code keeps it, or the
    search put it outside the model's code): only then is the issue written for their tracker."""
    return t.kind == Kind.TOOLCHAIN_LEAK or t.figures.get("own_code") is False


def _toolchain_where(f: Mapping[str, Any], per: str) -> str:
    """What bisector found in the toolchain: its reasons, the objects it keeps and where, its
    Python sites, and a native stack when the traced probe recorded one."""
    repeat = (f.get("owners") or {}).get("repeat") or {}
    lines = [f"- {r}" for r in f.get("reasons") or () if "not your model" in r]
    for row in ((repeat.get("objects") or {}).get("sites") or {}).get("toolchain") or []:
        lines.append(f"- {row['objects']:g} objects/{per}: {row['where']}")
    for row in (repeat.get("sites") or {}).get("toolchain") or []:
        lines.append(f"- {format_bytes(row['bytes'])}/{per} of Python allocations at `{row['where']}`")
    stacks = repeat.get("native_sites") or repeat.get("native_stacks") or []
    for row in stacks:
        if isinstance(row, Mapping) and row.get("where"):
            lines.append(f"- native {format_bytes(row.get('bytes'))}/{per}: `{row['where']}`")
    return "\n".join(dict.fromkeys(lines))


@dataclass(frozen=True)
class IssueReporter:
    """One bundle's ISSUE.md. child: what the bundle's child process found (the region's type, the
    exporter, the versions); env: the text of env.txt."""

    spec: str
    target: BundleTarget
    child: Mapping[str, Any] = field(default_factory=dict)
    env: str = ""

    @classmethod
    def from_target(cls, spec: str, target: BundleTarget, child: Mapping[str, Any], env: str) -> IssueReporter:
        return cls(spec, target, child, env)

    def render(self, out: TextIO) -> None:
        if not upstream(self.target):
            out.write(self._team())
        elif self.target.stage == "inference":
            out.write(self._onnxruntime())
        else:
            out.write(self._pytorch())

    @property
    def _per(self) -> str:
        return step_of(self.target.stage)

    def _what(self) -> str:
        """The title: what grows, on what call."""
        t, region = self.target, self.target.region or "the whole model"
        what = {
            "eager": (
                f"Memory grows on every forward call of `{region}` ({self.child.get('region_type', '')}) "
                "under `torch.no_grad()`"
            ),
            "export": (
                f"Memory grows on every `torch.onnx.export` of `{region}` "
                f"({self.child.get('exporter') or 'default'} exporter)"
            ),
            "inference": f"Memory grows on every ONNX Runtime `InferenceSession.run` of the exported `{region}`",
        }[t.stage]
        return what.replace("on every", "with every new input shape in") if t.kind == Kind.SHAPE_GROWTH else what

    def _observed(self) -> str:
        """The figures as measured, what holds the growth (retention.py) and where the toolchain
        keeps it (the traced probe)."""
        f, per = self.target.figures, self._per
        rows = [
            (
                "growth per " + per,
                f"{format_bytes(f.get('growth_bytes_per_call'), True)} ({f.get('growth_metric') or 'rss'})",
            ),
            ("growth per new input shape", format_bytes(f.get("growth_bytes_per_new_shape"), True)),
            (
                "live Python objects per " + per,
                "-" if f.get("objects_per_call") is None else f"{f['objects_per_call']:+.1f}",
            ),
            ("detection floor per " + per, format_bytes(f.get("floor_bytes_per_call"))),
        ]
        table = "| | measured |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
        observed = f"{measured_text(self.target)}\n\n{table}"
        held = f.get("retention") or []
        if held:
            observed += "\n\nWhat holds it:\n\n" + "\n".join(f"- {describe(r, per)}" for r in held)
        where = _toolchain_where(f, per)
        if where:
            observed += "\n\nWhere the toolchain keeps it (bisector's traced probe):\n\n" + where
        return observed

    def _expected(self) -> str:
        return f"Memory flat after warm-up: nothing kept per {self._per} once the same input shapes repeat."

    def _onnxruntime(self) -> str:
        what, v = self._what(), dict(self.child.get("versions") or {})
        return (
            f"# {what}\n\n<!-- for https://github.com/microsoft/onnxruntime/issues (bug report template) -->\n\n"
            f"### Describe the issue\n\n{what} (model `{self.spec}`).\n\nExpected: {self._expected()}\n\n"
            f"Observed: {self._observed()}\n\n"
            f"### To reproduce\n\n{REPRO}\n\n### Urgency\n\n(fill in)\n\n"
            f"### Platform\n\n{v.get('platform', '')}\n\n### OS Version\n\nsee env.txt\n\n"
            "### ONNX Runtime Installation\n\nReleased Package\n\n### ONNX Runtime Version or Commit ID\n\n"
            f"{v.get('onnxruntime') or v.get('onnxruntime-gpu', '')}\n\n"
            "### ONNX Runtime API\n\nPython\n\n### Architecture\n\nsee env.txt\n\n### Execution Provider\n\n"
            f"{v.get('ort_providers', '')}\n\n"
            f"### Environment\n\n```\n{self.env}```\n"
        )

    def _pytorch(self) -> str:
        what = self._what()
        return (
            f"# {what}\n\n<!-- for https://github.com/pytorch/pytorch/issues (bug report template) -->\n\n"
            f"### 🐛 Describe the bug\n\n{what} (model `{self.spec}`).\n\n**Expected:** {self._expected()}\n\n"
            f"**Observed:** {self._observed()}\n\n"
            f"Minimal repro:\n\n{REPRO}\n\n### Versions\n\n```\n{self.env}```\n"
        )

    def _team(self) -> str:
        """For the team's own tracker: the growth is in the model's code; where to look, the hint,
        the repro."""
        t, f, per = self.target, self.target.figures, self._per
        region = t.region or "the whole model"
        kind = "with every new input shape" if t.kind == Kind.SHAPE_GROWTH else f"on every {per}"
        stage = {"eager": "forward", "export": "torch.onnx.export", "inference": "ONNX Runtime run"}[t.stage]
        region_type = f" ({self.child['region_type']})" if self.child.get("region_type") else ""
        lines = [
            f"# Memory grows {kind} in `{region}` ({stage})",
            "",
            "<!-- for this project's own issue tracker: the growth is in the model's code, not torch's or "
            "ONNX Runtime's -->",
            "",
            f"**Model:** `{self.spec}`, region `{region}`" + region_type,
            "",
            f"**Measured:** {measured_text(t)}",
        ]
        held = f.get("retention") or []
        if held:
            lines += ["", "What holds it:", "", *(f"- {describe(r, per)}" for r in held)]
        sites = (((f.get("owners") or {}).get("repeat") or {}).get("sites") or {}).get("model") or []
        if sites:
            lines += [
                "",
                "**Where it is allocated:**",
                "",
                *(f"- `{r['where']}`: {format_bytes(r['bytes'])}/{per}" for r in sites),
            ]
        if f.get("hint"):
            lines += ["", f"**Next step:** {f['hint']}"]
        lines += [
            "",
            "**Reproduce:** `python repro.py` in this folder (prints RSS, C heap and live objects every N calls); "
            "`bisector fix` proposes and measures fixes.",
            "",
            "<details><summary>Environment</summary>",
            "",
            f"```\n{self.env}```",
            "",
            "</details>",
            "",
        ]
        return "\n".join(lines)


def issue_text(spec: str, t: BundleTarget, child: Mapping[str, Any], env: str) -> str:
    """ISSUE.md's text for one target (IssueReporter, rendered)."""
    return render_text(IssueReporter.from_target(spec, t, child, env))
