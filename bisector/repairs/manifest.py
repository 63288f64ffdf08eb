"""The models a repair run repairs, and each one's options.

The models come from ``[[tool.bisector.models]]`` in a pyproject.toml, or from a manifest (a
TOML file with the same ``[[models]]`` tables, or JSON ``{"models": [...]}``). Each entry:

    spec = "models/net.py:Net"        # required
    inputs = ["x=B,3,H,W"]            # and optionally dims, stages, exporter, init_kwargs,
    export_script = "export.py"       #   export_script, infer_script, device, seed, artifact
    check = "python serve/serve.py"   #   (the model's name in shared scripts), prefer, pick

Keys at the top level are every entry's defaults; with a manifest, those of the ``--config`` file
(when given) are defaults under the manifest's own.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bisector.common.errors import UserError
from bisector.common.project import project_root
from bisector.options.config import ToolTable, find_pyproject, load_config, validate
from bisector.options.table import entry_keywords
from bisector.pipeline.prepare import Options

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class ModelEntry:
    spec: str  # absolute
    options: Mapping[str, Any]
    base: str  # the folder paths in the entry are relative to
    label: str = ""  # the spec as written in the manifest
    # The [tool.bisector] file the entry came from (--config, the pyproject found, or a manifest in
    # that shape): the model's run reads its config there, not in the pyproject nearest the model.
    config: str | None = None

    @property
    def name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", (self.label or self.spec).replace(".py:", "-")).strip("-")

    def path(self, key: str) -> str | None:
        value = self.options.get(key)
        return str((Path(self.base) / value).resolve()) if value else None


@dataclass(frozen=True)
class _Source:
    """Where the models were listed: the table, the folder its paths are relative to, and the
    [tool.bisector] file each model's run reads its config from (None: the pyproject nearest it)."""

    table: Mapping[str, Any]
    base: str
    config: str | None


def load_models(config: str | None = None, manifest: str | None = None) -> list[ModelEntry]:
    """The models to repair: from a manifest (over the --config file's defaults, when given), or
    from the [tool.bisector] of --config, else of the nearest pyproject."""
    source = _read_manifest(manifest, config) if manifest else _read_config(config)
    root = project_root(Path(source.base)).resolve()
    models = source.table.get("models") or []
    if not isinstance(models, list) or not models:
        raise UserError('no models to repair: add [[tool.bisector.models]] entries with spec = "path.py:Name"')
    defaults = {k: v for k, v in source.table.items() if k != "models"}
    return [_entry(i, entry, defaults, source, root) for i, entry in enumerate(models)]


def _read_manifest(manifest: str, config: str | None) -> _Source:
    path = Path(manifest)
    if not path.is_file():
        raise UserError(f"manifest {manifest} does not exist")
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else tomllib.loads(path.read_text())
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read manifest {manifest}: {exc}") from None
    tool = data.get("tool") if isinstance(data, dict) else None
    nested = isinstance(tool, dict) and "bisector" in tool
    table = validate(ToolTable, tool["bisector"] if nested else data, manifest, "[tool.bisector]" if nested else "")
    own = str(path.resolve()) if nested else None
    if not config:
        return _Source(table, str(path.resolve().parent), own)
    # The --config file repair was given: its defaults under the manifest's, and each model's run
    # reads it (unless the manifest is itself a [tool.bisector] file) rather than the pyproject
    # nearest the model.
    given = load_config(None, config)
    under = {k: v for k, v in given.table.items() if k != "models"}
    return _Source({**under, **table}, str(path.resolve().parent), own or str(Path(config).resolve()))


def _read_config(config: str | None) -> _Source:
    cfg = load_config(None, config)
    if cfg.path is None:
        where = config or find_pyproject(Path.cwd()) or "the current folder"
        raise UserError(
            f"no [tool.bisector] table in {where}; list models as [[tool.bisector.models]] or pass --manifest"
        )
    return _Source(dict(cfg.table), str(Path(cfg.path).parent), cfg.path)


def _entry(i: int, entry: Any, defaults: Mapping[str, Any], source: _Source, root: Path) -> ModelEntry:
    """The i-th entry, checked, over the table's defaults."""
    if not isinstance(entry, dict) or not isinstance(entry.get("spec"), str):
        raise UserError(f'model entry {i + 1} has no spec = "path.py:Name"')
    what = f"model entry {i + 1} ({entry['spec']})"
    options = {**defaults, **{k: v for k, v in entry.items() if k != "spec"}}
    for key in ("check", "prefer", "artifact"):
        if key in options and not isinstance(options[key], str):
            raise UserError(f"{what}: {key} must be a string")
    pick = options.get("pick", 1)
    if not (isinstance(pick, int) and not isinstance(pick, bool) and pick >= 1):
        raise UserError(f"{what}: pick must be a whole number from 1 (the N-th kept fix)")
    file_part, _, name = entry["spec"].rpartition(":")
    model_file = (Path(source.base) / file_part).resolve()
    _check_inside(model_file, root, what)
    return ModelEntry(
        spec=f"{model_file}:{name}", options=options, base=source.base, label=entry["spec"], config=source.config
    )


def _check_inside(model_file: Path, root: Path, what: str) -> None:
    """repair writes one patch set for the project the manifest is in (paths from its root, for
    `git apply`); a model file outside it could only be named by an absolute path there, which
    `git apply` rejects. Refused before any model is loaded."""
    if not model_file.is_relative_to(root):
        raise UserError(
            f"{what}: {model_file} is outside the project {root} the manifest belongs to, so no patch could "
            "name it; list it in a manifest of its own project, or put the manifest in a folder above both"
        )


def model_key(entry: ModelEntry) -> str:
    """The model's name in shared scripts: `artifact` in its entry, else its file's stem
    (`models/tagger.py` -> "tagger", served from `tagger.onnx`)."""
    return str(entry.options.get("artifact") or Path(entry.spec.rpartition(":")[0]).stem)


def entry_options(entry: ModelEntry, jobs: int | None) -> Options:
    """A manifest entry's options as the CLI's flags would give them, read through the option
    table (options/table.py: one mapping from entry keys to prepare's keywords, so a key the table
    gains reaches the run without an edit here). A key the schema allows as one string or a list
    (inputs, dims, stages, floor), or dims as a table, reads as the list. Script paths resolve
    against the entry's project; the run's jobs and config file come from the repair."""
    keywords = entry_keywords(entry.options)
    return Options(
        **{
            **keywords,
            "jobs": jobs,
            "export_script": _existing(entry.path("export_script")),
            "infer_script": _existing(entry.path("infer_script")),
            "artifact": model_key(entry),
            "config": entry.config,
        }
    )


def _existing(path: str | None) -> str | None:
    # A script the manifest names but the project lacks adds no settings; patching it says why.
    return path if path and Path(path).is_file() else None
