"""Growth no fixer can bound without changing what the model computes, said as such.

A culprit whose retention path is a container of modules or parameters (``nn.ModuleList``,
``nn.ModuleDict``, ``nn.ParameterList``, ``nn.ParameterDict``, ``nn.Sequential``) grown by the
model's own code holds *weights*: forward reads them back, and an optimizer may train them.
Evicting an entry throws trained state away, and the next input that needs it gets a fresh,
randomly initialised one: the outputs change silently. No bound preserves behaviour, so `fix`
says "not fixable automatically" with the reason and what to change, instead of a bare "no kept
fix".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MODULE_CONTAINERS = frozenset({"ModuleList", "ModuleDict", "ParameterList", "ParameterDict", "Sequential"})


@dataclass(frozen=True)
class NotFixable:
    """A culprit fix will not patch, why, and what the user can change instead."""

    region: str
    stage: str
    path: str  # the retention path: what holds the growth
    container: str
    reason: str
    suggestion: str

    def note(self) -> str:
        return f"{self.region or '<root>'} ({self.stage}): not fixable automatically: {self.reason}. {self.suggestion}"

    def to_json(self) -> dict[str, str]:
        return {
            "region": self.region,
            "stage": self.stage,
            "path": self.path,
            "container": self.container,
            "reason": self.reason,
            "suggestion": self.suggestion,
        }


def _grows(row: Mapping[str, Any]) -> str:
    if (row.get("entries_per_new_shape") or 0) > 0:
        return "per new input shape"
    if (row.get("entries_per_call") or 0) > 0:
        return "per call"
    return ""


def not_fixable(culprit: Any) -> NotFixable | None:
    """The culprit's growth as not fixable automatically, when its retention path is a container
    of modules or parameters that grows; None otherwise (a fixer may still find a bound)."""
    retention = getattr(culprit.figures, "retention", None)
    rows = retention if isinstance(retention, (list, tuple)) else ()
    for row in rows:
        container = str(row.get("container") or row.get("qualname") or "")
        per = _grows(row)
        if container not in MODULE_CONTAINERS or not per:
            continue
        path = str(row.get("path") or row.get("attr") or "")
        where = f" at {row['mutated_at'][0]}" if row.get("mutated_at") else ""
        kind = "parameters" if container.startswith("Parameter") else "submodules"
        return NotFixable(
            region=culprit.region,
            stage=culprit.stage,
            path=path,
            container=container,
            reason=(
                f"{path} ({container}) gains {kind} {per}{where}; they are weights that forward reads back, so "
                "evicting one would re-create it with fresh values later and change the outputs"
            ),
            suggestion=(
                f"Create the {kind} in __init__ for the sizes you serve (or one over a padded, bucketed size), "
                "so that forward only reads the container."
            ),
        )
    return None
