"""Defaults from `[tool.bisector]` in the user's pyproject.toml, validated against a schema.

Looked up from the model file's folder upwards (the project the model belongs to), then from the
working directory. Command-line options always win over these.

The schema is derived from the option table (table.py): ``ToolTable`` (the table, or a manifest's
top level) and ``ModelEntryTable`` (one model entry) are frozen dataclasses with a field per key;
``validate`` walks their type hints and each field's ``check``, so a new key is one row of the
table, not new code. ``json_schema`` gives the same keys, types and choices as a JSON Schema.
Unknown keys are refused with a "did you mean" (a typo such as ``timout`` would otherwise be
silently ignored), and every error names the file, the table and the key.
"""

from __future__ import annotations

import difflib
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, Optional, Union

from bisector.common.errors import UserError
from bisector.options.checks import as_list  # noqa: F401 - repairs reads config values with it from here
from bisector.options.table import ENTRY, TABLE, config_options

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib


def _schema(name: str, scope: str, doc: str, extra: tuple[tuple[str, Any, Any], ...] = ()) -> type:
    """A frozen dataclass with a field per option the table accepts in this scope; each field's
    metadata holds the option's check, whether it is required and how an error words its type."""
    keys = [
        (
            o.name,
            Optional[o.type],
            field(default=None, metadata={"check": o.value_check(), "required": o.required, "expect": o.expect}),
        )
        for o in config_options(scope)
    ]
    cls = make_dataclass(name, [*keys, *extra], frozen=True)
    cls.__doc__ = doc
    return cls


ModelEntryTable = _schema(
    "ModelEntryTable", ENTRY, "One `[[tool.bisector.models]]` entry (or `[[models]]` in a manifest)."
)
ToolTable = _schema(
    "ToolTable",
    TABLE,
    "The `[tool.bisector]` table (or a manifest's top level).",
    (("models", Optional[list[ModelEntryTable]], field(default=None, metadata={})),),  # type: ignore[valid-type]
)


_DESCRIBE = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", type(None): "nothing"}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        parts = [_describe(a) for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(dict.fromkeys(parts))
    if origin is list:
        (item,) = typing.get_args(tp)
        return (
            f"a list of {_describe(item).removeprefix('a ').removeprefix('an ')}s"
            if item in _DESCRIBE
            else "a list of tables"
        )
    if origin is dict or tp is dict:
        return "a table"
    if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return "a table"
    return _DESCRIBE.get(tp, str(tp))


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        _, item = typing.get_args(tp)
        return isinstance(value, dict) and all(isinstance(k, str) and _matches(v, item) for k, v in value.items())
    if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return isinstance(value, dict)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and value == value
            and abs(value) != float("inf")
        )
    return isinstance(value, tp)


def validate(schema: type, data: Any, file: str | Path, table: str) -> dict[str, Any]:
    """Check a table against a schema dataclass and return it; a ToolTable's model entries are
    checked too. Every error starts "FILE: TABLE KEY:" (table "" for a manifest's top level)."""
    where = f"{file}: {table}".rstrip()
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a table")
    hints = typing.get_type_hints(schema)
    known = {f.name: f for f in fields(schema)}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(sorted(known))}"
            shown = key if str(key).isidentifier() else repr(key)  # a key may hold a newline
            raise UserError(f"{where} {shown}: unknown key{hint}")
    for name, f in known.items():
        if name not in data:
            if f.metadata.get("required"):
                raise UserError(f'{where}: {name} is required, e.g. {name} = "models/net.py:Net"')
            continue
        value = data[name]
        if not _matches(value, hints[name]):
            raise UserError(
                f"{where} {name}: expected {f.metadata.get('expect') or _describe(hints[name])}, got {_show(value)}"
            )
        check = f.metadata.get("check")
        if check is not None:
            try:
                check(value)
            except ValueError as exc:
                raise UserError(f"{where} {name}: {exc}") from None
    if schema is ToolTable and data.get("models") is not None:
        inner = table.strip("[]")
        entries = f"[[{inner}.models]]" if inner else "[[models]]"
        for i, item in enumerate(data["models"]):
            spec = item.get("spec")
            label = f" ({spec if spec.isprintable() else repr(spec)})" if isinstance(spec, str) else ""
            validate(ModelEntryTable, item, file, f"{entries} #{i + 1}{label}")
    return data


def _show(value: Any) -> str:
    kind = {
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


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
            if entry_name == name and file_part and _same_file(root / file_part, Path(model_path)):
                merged.update({k: v for k, v in entry.items() if k != "spec"})
        return merged


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL in the name
        return False


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
        if p.is_dir():
            inside = " (it has a pyproject.toml: pass that)" if (p / "pyproject.toml").is_file() else ""
            raise UserError(f"--config {explicit} is a folder, not a pyproject.toml{inside}")
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
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
        tool = data.get("tool")
        table = tool.get("bisector") if isinstance(tool, dict) else None
        if table is not None:
            return ProjectConfig(path=str(path.resolve()), table=validate(ToolTable, table, path, "[tool.bisector]"))
    return ProjectConfig()


_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}


def _json_type(tp: Any, choices: tuple[str, ...] = ()) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return {"anyOf": [_json_type(a, choices) for a in typing.get_args(tp) if a is not type(None)]}
    if origin is list:
        return {"type": "array", "items": _json_type(typing.get_args(tp)[0], choices)}
    if origin is dict:
        item = typing.get_args(tp)[1]
        return {"type": "object", "additionalProperties": {} if item is Any else _json_type(item)}
    if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return _json_object(tp)
    if tp is str and choices:
        return {"type": "string", "enum": list(choices)}
    return {"type": _JSON_TYPES[tp]}


def _json_object(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    by_name = {o.name: o for o in config_options(ENTRY) + config_options(TABLE)}
    props = {
        f.name: _json_type(hints[f.name], by_name[f.name].choices if f.name in by_name else ()) for f in fields(schema)
    }
    required = [f.name for f in fields(schema) if f.metadata.get("required")]
    return {
        "type": "object",
        "properties": props,
        "additionalProperties": False,
        **({"required": required} if required else {}),
    }


def json_schema() -> dict[str, Any]:
    """`[tool.bisector]` (or a manifest) as a JSON Schema, derived from the option table: its keys,
    their types and choices (for editors and other tools; sizes, ranges and input syntax are
    checked by ``validate`` only)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "[tool.bisector]",
        **_json_object(ToolTable),
    }
