"""The sample models' ground truth, read from their files without importing them."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRUTH_NAME = "BISECTOR_TRUTH"


@dataclass(frozen=True)
class Truth:
    path: str
    spec: str
    inputs: tuple[str, ...]
    dims: tuple[str, ...]
    stages: dict[str, str]
    culprits: tuple[dict[str, Any], ...] = ()
    exporter: str | None = None
    device: str | None = None
    gpu_only: bool = False
    fixable: bool = True  # a fixer should flatten every culprit (False: says why in the file)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        stem = Path(self.path).stem
        return stem if self.spec in ("Net", "make") else f"{stem}:{self.spec}"

    @property
    def target(self) -> str:
        return f"{self.path}:{self.spec}"


def read_truths(path: str | Path) -> list[Truth]:
    """The literal BISECTOR_TRUTH of a sample file: one dict, or a list of them (one per model
    the file defines). Read with ast, so the file is never imported."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == TRUTH_NAME for t in node.targets):
            value = ast.literal_eval(node.value)
            return [_truth(path, d) for d in (value if isinstance(value, list) else [value])]
    return []


def _truth(path: str | Path, data: dict[str, Any]) -> Truth:
    known = {"spec", "inputs", "dims", "stages", "culprits", "exporter", "device", "gpu_only", "fixable"}
    return Truth(
        path=str(path),
        spec=data.get("spec", "Net"),
        inputs=tuple(data.get("inputs", ())),
        dims=tuple(data.get("dims", ())),
        stages=dict(data.get("stages", {})),
        culprits=tuple(data.get("culprits", ())),
        exporter=data.get("exporter"),
        device=data.get("device"),
        gpu_only=bool(data.get("gpu_only", False)),
        fixable=bool(data.get("fixable", True)),
        extra={k: v for k, v in data.items() if k not in known},
    )


def zoo(folder: str | Path) -> list[Truth]:
    out = []
    for path in sorted(Path(folder).glob("*.py")):
        out.extend(read_truths(path))
    return out
