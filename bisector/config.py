"""Defaults from `[tool.bisector]` in the user's pyproject.toml.

Looked up from the model file's folder upwards (the project the model belongs to), then from the
working directory. Command-line options always win over these.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bisector.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class ProjectConfig:
    """The `[tool.bisector]` table of one pyproject.toml (empty when there is none)."""

    path: str | None = None
    table: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.table.get(key, default)

    def for_model(self, model_path: str, name: str) -> Mapping[str, Any]:
        """Top-level defaults overlaid with the `[[tool.bisector.models]]` entry naming this model."""
        merged = {k: v for k, v in self.table.items() if k != "models"}
        root = Path(self.path).parent if self.path else Path.cwd()
        for entry in self.table.get("models", []) or []:
            spec = str(entry.get("spec", ""))
            file_part, _, entry_name = spec.rpartition(":")
            if entry_name == name and file_part and (root / file_part).resolve() == Path(model_path).resolve():
                merged.update({k: v for k, v in entry.items() if k != "spec"})
        return merged


def find_pyproject(start: Path) -> Path | None:
    for folder in [start, *start.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_config(model_path: str | None = None, explicit: str | None = None) -> ProjectConfig:
    """The nearest `[tool.bisector]` table: explicit file, else near the model, else near cwd."""
    candidates: list[Path] = []
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise UserError(f"config file {explicit} does not exist")
        candidates.append(p)
    else:
        for start in ([Path(model_path).resolve().parent] if model_path else []) + [Path.cwd()]:
            found = find_pyproject(start)
            if found:
                candidates.append(found)
    for path in candidates:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
        table = data.get("tool", {}).get("bisector")
        if table is not None:
            if not isinstance(table, dict):
                raise UserError(f"{path}: [tool.bisector] must be a table")
            return ProjectConfig(path=str(path.resolve()), table=table)
    return ProjectConfig()


def as_list(value: Any, key: str) -> list[str]:
    """A config value that may be one string or a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, dict) and key == "dims":
        return [f"{k}={v}" for k, v in value.items()]
    raise UserError(f"[tool.bisector] {key} must be a string or a list of strings")
