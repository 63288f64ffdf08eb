"""Resuming a stopped run: a model whose result is in `<out>/<name>.json` under the same key (the
same model source, scripts, options and bisector) is not probed again, and its edits still go
into the patches."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from bisector.lab.stage import source_hash
from bisector.model.spec import ModelSpec
from bisector.patching.from_report import ModelWork
from bisector.repairs.manifest import ModelEntry
from bisector.repairs.results import ModelResult
from bisector.store.caches import code_version


def result_key(entry: ModelEntry, extra: Mapping[str, Any]) -> str:
    """What a kept result was computed from: the entry, the run's `extra` options, the model's
    source, its scripts' bytes and bisector's own code."""
    path, _, name = entry.spec.rpartition(":")
    h = hashlib.sha256(
        json.dumps({"spec": entry.spec, "options": entry.options, "extra": extra}, sort_keys=True, default=str).encode()
    )
    h.update(source_hash(ModelSpec(path, name)).encode())
    for f in (p for p in (entry.path("export_script"), entry.path("infer_script")) if p):
        try:
            h.update(Path(f).read_bytes())
        except OSError:
            pass
    h.update(code_version().encode())
    return h.hexdigest()[:20]


def safe_key(entry: ModelEntry, extra: Mapping[str, Any]) -> str:
    """The key, or "" (nothing resumes) when it cannot be computed."""
    try:
        return result_key(entry, extra)
    except Exception:  # noqa: BLE001 - a missing file is reported when the model runs
        return ""


def load_done(entry: ModelEntry, out: Path, key: str) -> tuple[ModelResult, ModelWork | None] | None:
    """The model's result kept in <out>/<name>.json by an earlier run with the same key. Its patches
    and check are not kept: they are composed and proven again over every model."""
    done = out / f"{entry.name}.json"
    if not key or not done.exists():
        return None
    try:
        data = json.loads(done.read_text())
        if data.get("key") != key:
            return None
        result = replace(ModelResult.from_json(data["result"]), patches=(), check="")
        return result, ModelWork.from_json(data["work"]) if data.get("work") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_done(entry: ModelEntry, out: Path, key: str, result: ModelResult, work: ModelWork | None) -> None:
    """Keep the model's result and edits for the next run (an error is not kept: it reruns)."""
    data = {"key": key, "result": result.to_json(), "work": work.to_json() if work is not None else None}
    (out / f"{entry.name}.json").write_text(json.dumps(data, indent=1))
