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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def target(self) -> str:
        return f"{self.path}:{self.spec}"


def read_truth(path: str | Path) -> Truth | None:
    """The literal BISECTOR_TRUTH dict of a sample file, or None when it has none."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == TRUTH_NAME for t in node.targets):
            data = ast.literal_eval(node.value)
            known = {"spec", "inputs", "dims", "stages", "culprits", "exporter", "device", "gpu_only"}
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
                extra={k: v for k, v in data.items() if k not in known},
            )
    return None


def zoo(folder: str | Path) -> list[Truth]:
    out = []
    for path in sorted(Path(folder).glob("*.py")):
        truth = read_truth(path)
        if truth is not None:
            out.append(truth)
    return out
