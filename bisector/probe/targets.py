"""What a probe runs: a module and the calls it receives at each step of the schedule.

A target is the whole model with generated inputs, or a region with the inputs recorded for it
(regions.py); several regions run together are one target (regions.group_target).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bisector.model.schedule import Step
from bisector.probe.inputs import Args


@dataclass
class Target:
    """A module to call, and the calls it receives at step i (a region may be called many times)."""

    name: str
    module: Any
    calls: Callable[[int, Step], list[Args]]
    input_names: list[str] | None = None  # names for the tensor inputs, when known
    symbols: list[dict[int, str]] | None = None  # per tensor input: dim index -> symbol name


def who(target: Target) -> str:
    """The target as error messages name it."""
    return "the model" if target.name == "" else f"region {target.name!r}"
