"""Scripted repair for migration projects: find and fix many models, one patch each, a summary.

The models come from ``[[tool.bisector.models]]`` in a pyproject.toml, or from a manifest (a
TOML file with the same ``[[models]]`` tables, or JSON ``{"models": [...]}``). Each entry:

    spec = "models/net.py:Net"        # required
    inputs = ["x=B,3,H,W"]            # and optionally dims, stages, exporter, init_kwargs,
    export_script = "export.py"       #   export_script, infer_script, device, seed

Per model, ``<out>/<name>.patch`` (the best kept fixes as a unified diff, empty when there is
nothing to change) and ``<out>/<name>.json``; for the run, ``summary.json`` and ``summary.md``.
A model whose result is on disk for the same model source and options is not probed again, so a
stopped run resumes. Models run side by side sharing one probe server and one limit on probes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from bisector.errors import BisectorError, UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CLEAN, FIXED, UNFIXED, ERROR = "clean", "fixed", "unfixed", "error"


@dataclass(frozen=True)
class ModelEntry:
    spec: str  # absolute
    options: Mapping[str, Any]
    base: str  # the folder paths in the entry are relative to
    label: str = ""  # the spec as written in the manifest

    @property
    def name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", (self.label or self.spec).replace(".py:", "-")).strip("-")

    def path(self, key: str) -> str | None:
        value = self.options.get(key)
        return str((Path(self.base) / value).resolve()) if value else None


@dataclass(frozen=True)
class ModelResult:
    name: str
    spec: str
    status: str  # clean | fixed | unfixed | error
    verdict: str = ""
    culprits: tuple[Mapping[str, Any], ...] = ()
    kept: tuple[Mapping[str, Any], ...] = ()
    patch: str | None = None
    error: str = ""
    wall_s: float = 0.0
    probes: int = 0
    resumed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "spec": self.spec, "status": self.status, "verdict": self.verdict,
            "culprits": list(self.culprits), "kept": list(self.kept), "patch": self.patch, "error": self.error,
            "wall_s": round(self.wall_s, 2), "probes": self.probes, "resumed": self.resumed,
        }


@dataclass(frozen=True)
class RepairSummary:
    results: tuple[ModelResult, ...]
    out: str
    wall_s: float
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        statuses = {r.status for r in self.results}
        if ERROR in statuses:
            return 2
        return 1 if UNFIXED in statuses else 0

    def to_json(self) -> dict[str, Any]:
        return {"models": [r.to_json() for r in self.results], "out": self.out, "wall_s": round(self.wall_s, 2), "counts": dict(self.counts)}

    def markdown(self) -> str:
        from bisector.units import format_bytes

        lines = [
            "| model | status | verdict | culprits | best kept fix | growth before -> after | patch |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.results:
            culprits = ", ".join(f"`{c['region'] or '<root>'}` ({c['stage']} {c['kind']})" for c in r.culprits) or "-"
            fixes = "; ".join(k["fixer"] for k in r.kept) or "-"
            change = "; ".join(_change(k, format_bytes) for k in r.kept) or "-"
            patch = f"[{Path(r.patch).name}]({Path(r.patch).name})" if r.patch else "-"
            status = r.status + (f": {r.error}" if r.error else "")
            lines.append(f"| `{r.spec}` | {status} | {r.verdict or '-'} | {culprits} | {fixes} | {change} | {patch} |")
        return "\n".join(lines) + "\n"


def _change(k: Mapping[str, Any], fmt: Any) -> str:
    """The figure the fix was judged on, before -> after (a clean verdict reads as 0)."""
    unit = k.get("judged_on", "bytes/call")
    clean = k.get("after_kind") == "clean"
    if unit == "objects/call":
        return f"{k.get('before_objects_per_call') or 0:+.0f} -> {0 if clean else k.get('after_objects_per_call') or 0:+.0f} objects/call"
    if unit == "objects/new shape":
        return f"{k.get('before_objects_per_new_shape') or 0:+.0f} -> {0 if clean else k.get('after_objects_per_new_shape') or 0:+.0f} objects/new shape"
    if unit == "bytes/call":
        return f"{fmt(k.get('before_bytes_per_call'), True)} -> {'0 B' if clean else fmt(k.get('after_bytes_per_call'), True)}/call"
    return f"{fmt(k.get('before_bytes_per_new_shape'), True)} -> {'0 B' if clean else fmt(k.get('after_bytes_per_new_shape'), True)}/new shape"


# ---------------------------------------------------------------------------------------------


def load_models(config: str | None = None, manifest: str | None = None) -> list[ModelEntry]:
    """The models to repair: from a manifest, or from the nearest pyproject's [tool.bisector]."""
    if manifest:
        path = Path(manifest)
        if not path.is_file():
            raise UserError(f"manifest {manifest} does not exist")
        try:
            data = json.loads(path.read_text()) if path.suffix == ".json" else tomllib.loads(path.read_text())
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"cannot read manifest {manifest}: {exc}") from None
        from bisector.config import ToolTable, validate

        tool = data.get("tool") if isinstance(data, dict) else None
        nested = isinstance(tool, dict) and "bisector" in tool
        table = validate(ToolTable, tool["bisector"] if nested else data, manifest, "[tool.bisector]" if nested else "")
        base = str(path.resolve().parent)
    else:
        from bisector.config import find_pyproject, load_config

        cfg = load_config(None, config)
        if cfg.path is None:
            where = config or find_pyproject(Path.cwd()) or "the current folder"
            raise UserError(f"no [tool.bisector] table in {where}; list models as [[tool.bisector.models]] or pass --manifest")
        table = dict(cfg.table)
        base = str(Path(cfg.path).parent)
    models = table.get("models") or []
    if not isinstance(models, list) or not models:
        raise UserError("no models to repair: add [[tool.bisector.models]] entries with spec = \"path.py:Name\"")
    defaults = {k: v for k, v in table.items() if k != "models"}
    out = []
    for i, entry in enumerate(models):
        if not isinstance(entry, dict) or not isinstance(entry.get("spec"), str):
            raise UserError(f"model entry {i + 1} has no spec = \"path.py:Name\"")
        options = {**defaults, **{k: v for k, v in entry.items() if k != "spec"}}
        file_part, _, name = entry["spec"].rpartition(":")
        out.append(ModelEntry(spec=f"{(Path(base) / file_part).resolve()}:{name}", options=options, base=base, label=entry["spec"]))
    return out


def _key(entry: ModelEntry, extra: Mapping[str, Any]) -> str:
    from bisector.find import source_hash
    from bisector.measure import code_version
    from bisector.spec import ModelSpec

    path, _, name = entry.spec.rpartition(":")
    files = [path] + [p for p in (entry.path("export_script"), entry.path("infer_script")) if p]
    h = hashlib.sha256(json.dumps({"spec": entry.spec, "options": entry.options, "extra": extra}, sort_keys=True, default=str).encode())
    h.update(source_hash(ModelSpec(path, name)).encode())
    for f in files[1:]:
        try:
            h.update(Path(f).read_bytes())
        except OSError:
            pass
    h.update(code_version().encode())
    return h.hexdigest()[:20]


def repair_one(entry: ModelEntry, out: Path, pool: Any, executor: Any, run_dir: Path, allow_output_changes: bool, jobs: int | None) -> ModelResult:
    from bisector import api
    from bisector.find import Finder
    from bisector.patch import combined_diff, patches_for, project_root
    from bisector.repair import Repairer, failure_culprits, unfixable_failures

    started = time.perf_counter()
    o = entry.options
    try:
        prepared = api.prepare(
            entry.spec, o.get("inputs") or (), o.get("dims") or (), stages=o.get("stages"), exporter=o.get("exporter"),
            device=o.get("device"), init_kwargs=o.get("init_kwargs"), seed=o.get("seed"), noise_rss=o.get("noise_rss"),
            noise_gpu=o.get("noise_gpu"), retries=o.get("retries"), timeout_s=o.get("timeout"), mem_cap=o.get("mem_cap"), jobs=jobs,
            fresh=bool(o.get("fresh")), metric=o.get("metric"),
        )
        finder = Finder(prepared.model, prepared.plan, prepared.options, run_dir=run_dir, pool=pool, executor=executor)
        try:
            found = failure_culprits(finder.find())
            failed = unfixable_failures(found)
            if failed:
                raise UserError("; ".join(failed))
            report = Repairer(finder, found, allow_output_changes=allow_output_changes, only=o.get("fixers") or ()).run()
        finally:
            finder.close()
    except BisectorError as exc:
        return ModelResult(entry.name, entry.label or entry.spec, ERROR, error=str(exc).splitlines()[0], wall_s=time.perf_counter() - started)
    patches, notes = patches_for(report, project_root(prepared.model.path), entry.path("export_script"), entry.path("infer_script"))
    patch_file = out / f"{entry.name}.patch"
    patch_file.write_text(combined_diff(patches))
    culprits = tuple({k: v for k, v in c.to_json().items() if k in ("region", "stage", "kind", "growth_bytes_per_call", "growth_bytes_per_new_shape", "own_code")} for c in found.culprits)
    best = []
    for c in found.culprits:
        kept = [e for e in report.for_culprit(c) if e.kept]
        if kept:
            best.append(kept[0].to_json())
    if not found.culprits:
        status = CLEAN
    else:
        status = FIXED if all(report.fixed(c) for c in found.culprits) else UNFIXED
    return ModelResult(
        entry.name, entry.label or entry.spec, status, verdict=found.verdict, culprits=culprits, kept=tuple(best),
        patch=str(patch_file) if patch_file.stat().st_size else None, error="; ".join(notes),
        wall_s=time.perf_counter() - started, probes=report.probes + found.probes,
    )


def repair(
    models: Iterable[ModelEntry],
    out: str | Path = ".bisector/repair",
    jobs: int | None = None,
    models_at_once: int = 2,
    allow_output_changes: bool = False,
    fresh: bool = False,
    progress: Any = None,
) -> RepairSummary:
    from bisector.probe.pool import ProbePool
    from bisector.spec import library_imports, parse_model_spec

    started = time.perf_counter()
    models = list(models)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "runs"
    extra = {"allow_output_changes": allow_output_changes}
    results: dict[str, ModelResult] = {}
    todo: list[ModelEntry] = []
    for entry in models:
        done = out / f"{entry.name}.json"
        try:
            key = _key(entry, extra)
        except Exception:  # noqa: BLE001 - a missing file is reported when the model runs
            key = ""
        if key and done.exists():
            try:
                data = json.loads(done.read_text())
                if data.get("key") == key:
                    r = data["result"]
                    results[entry.name] = ModelResult(**{**r, "culprits": tuple(r["culprits"]), "kept": tuple(r["kept"]), "resumed": True})
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                pass
        todo.append(entry)
    preload: list[str] = []
    for entry in todo:
        try:
            preload += library_imports(parse_model_spec(entry.spec))
        except BisectorError:
            pass
    n_jobs = jobs or (os.cpu_count() or 1)
    if todo:
        with ProbePool(fresh=fresh, preload=tuple(dict.fromkeys(preload))) as pool, \
                ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="bisector-probe") as probes, \
                ThreadPoolExecutor(max_workers=max(1, models_at_once), thread_name_prefix="bisector-model") as ex:
            futures = {e.name: (e, ex.submit(repair_one, e, out, pool, probes, run_dir, allow_output_changes, n_jobs)) for e in todo}
            for name, (entry, fut) in futures.items():
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - one model's bug never loses the others
                    result = ModelResult(entry.name, entry.label or entry.spec, ERROR, error=f"internal error: {type(exc).__name__}: {exc}")
                results[name] = result
                if result.status != ERROR:
                    (out / f"{name}.json").write_text(json.dumps({"key": _key(entry, extra), "result": result.to_json()}, indent=1))
                if progress is not None:
                    progress(result)
    ordered = tuple(results[e.name] for e in models)
    counts: dict[str, int] = {}
    for r in ordered:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = RepairSummary(ordered, str(out), time.perf_counter() - started, counts)
    (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=2))
    (out / "summary.md").write_text(summary.markdown())
    return summary
