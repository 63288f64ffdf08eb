"""Defaults from `[tool.bisector]` in the user's pyproject.toml, validated against a schema.

Looked up from the model file's folder upwards (the project the model belongs to), then from the
working directory. Command-line options always win over these.

The schema is a pair of frozen dataclasses (``Options`` for the keys a table and a model entry
share, ``ModelEntry``, ``ToolTable``); ``validate`` walks their type hints and each field's
``check``, so a new key is one field, not new code. Unknown keys are refused with a "did you mean"
(a typo such as ``timout`` would otherwise be silently ignored), and every error names the file,
the table and the key.
"""

from __future__ import annotations

import difflib
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union

from bisector.common.errors import UserError
from bisector.common.units import format_bytes, parse_size
from bisector.judge.fail_on import KINDS
from bisector.model.spec import parse_dim, parse_input
from bisector.probe.types import EXPORTERS, STAGES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

# A probe is a Python process with torch imported before the model does anything (measured,
# torch 2.13 CPU, a Linear(8, 8): 300 MB RSS forked from the probe server, 240 MB in a fresh
# interpreter). A cap below this kills every probe, which would read as "crashed", not as the
# typo it is.
MIN_MEM_CAP = 400 * 1000**2
# numpy.random.seed takes 0..2**32-1, and repair measures again with seed + 1: a seed outside
# this range failed inside the probe with bisector's own traceback (issue 19).
MAX_SEED = 2**32 - 2


# -- checks: each raises ValueError with what is wrong; the loader adds file, table and key ------


def _choices(*allowed: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        for v in [value] if isinstance(value, str) else value:
            if v not in allowed:
                close = difflib.get_close_matches(str(v), allowed, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise ValueError(f"unknown value {v!r}, use one of {', '.join(allowed)}{hint}")

    return check


def _stages(value: Any) -> None:

    _choices(*STAGES)(value)


def _exporter(value: Any) -> None:

    _choices(*EXPORTERS)(value)


def _fail_on(value: Any) -> None:

    _choices(*KINDS)(
        [t.strip() for v in ([value] if isinstance(value, str) else value) for t in str(v).split(",") if t.strip()]
    )


def _size(minimum: int = 1) -> Callable[[Any], None]:
    def check(value: Any) -> None:

        try:
            n = parse_size(value, "value")
        except UserError as exc:
            raise ValueError(str(exc).replace("value ", "", 1)) from None
        if n < minimum:
            raise ValueError(f"{value!r} is below {format_bytes(minimum)}")

    return check


def _at_least(low: float, strict: bool = False) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value < low or (strict and value == low):
            raise ValueError(f"{value!r} must be {'above' if strict else 'at least'} {low:g}")

    return check


def _between(low: int, high: int) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not low <= value <= high:
            raise ValueError(f"{value!r} must be from {low} to {high}")

    return check


def _each(parse: Callable[[str], Any]) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        for v in [value] if isinstance(value, str) else value:
            try:
                parse(v)
            except UserError as exc:
                raise ValueError(str(exc)) from None

    return check


def _inputs(value: Any) -> None:

    _each(parse_input)(value)


def _dims(value: Any) -> None:

    _each(parse_dim)(as_list(value, "dims"))


def _spec(value: Any) -> None:
    file_part, sep, name = value.rpartition(":")
    if not sep or not file_part or not name:
        raise ValueError(f"{value!r} is not PATH.py:NAME, e.g. models/net.py:Net")


def _key(check: Callable[[Any], None] | None = None, required: bool = False, expect: str = "") -> Any:
    # expect: how the error words the type, where the type alone says too little ("a size").
    return field(default=None, metadata={"check": check, "required": required, "expect": expect})


_SIZE_TEXT = 'a size such as "8GB" or a number of bytes'
Strs = Union[str, list[str]]
Size = Union[str, int]


@dataclass(frozen=True)
class Options:
    """The keys a `[tool.bisector]` table and each model entry in it share."""

    inputs: Strs | None = _key(_inputs)
    dims: Strs | dict[str, Union[str, int]] | None = _key(_dims)
    stages: Strs | None = _key(_stages)
    exporter: str | None = _key(_exporter)
    device: str | None = _key(_choices("auto", "cpu", "cuda"))
    metric: str | None = _key(_choices("rss", "uss"))
    noise_rss: Size | None = _key(_size(), expect=_SIZE_TEXT)
    noise_gpu: Size | None = _key(_size(), expect=_SIZE_TEXT)
    seed: int | None = _key(_between(0, MAX_SEED))
    retries: int | None = _key(_at_least(0))
    timeout: float | None = _key(_at_least(0, strict=True), expect="a number of seconds")
    mem_cap: Size | None = _key(_size(MIN_MEM_CAP), expect=_SIZE_TEXT)
    fresh: bool | None = _key()
    init_kwargs: dict[str, Any] | None = _key()
    export_script: str | None = _key()
    infer_script: str | None = _key()
    fixers: Strs | None = _key()
    # Detection floor targets: "4KB" for every stage, or a list of "STAGE=SIZE" (prepare.parse_floors).
    floor: Strs | None = _key()
    # Patches proven on the project (repair, fix): the command run in a shadow copy, its timeout.
    check: str | None = _key()
    check_timeout: float | None = _key(_at_least(0, strict=True), expect="a number of seconds")
    # Which kept fix goes in the patch: by rank (1 = best) or by a word of its summary.
    pick: int | None = _key(_at_least(1))
    prefer: str | None = _key()
    artifact: str | None = _key()  # the model's name in shared scripts (served from <artifact>.onnx)
    # Findings that fail the run (exit 1), e.g. "leak,shape-growth:unbounded" (see fail_on.py).
    fail_on: Strs | None = _key(_fail_on)
    # The memory budget bounded shape-growth's projected peak is judged against, e.g. "2GB" (fail_on.py).
    budget: Size | None = _key(_size(), expect=_SIZE_TEXT)


@dataclass(frozen=True)
class ModelEntry(Options):
    """One `[[tool.bisector.models]]` entry (or `[[models]]` in a manifest)."""

    spec: str | None = _key(_spec, required=True)


@dataclass(frozen=True)
class ToolTable(Options):
    """The `[tool.bisector]` table (or a manifest's top level)."""

    models: list[ModelEntry] | None = _key()
    # Recorded region inputs kept in the run directory, evicted oldest first past this (clean.py).
    capture_cap: Size | None = _key(_size(), expect=_SIZE_TEXT)


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
            validate(ModelEntry, item, file, f"{entries} #{i + 1}{label}")
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
