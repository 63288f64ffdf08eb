"""Scripted repair for migration projects: find and fix many models, one patch each, a summary.

The models come from ``[[tool.bisector.models]]`` in a pyproject.toml, or from a manifest (a
TOML file with the same ``[[models]]`` tables, or JSON ``{"models": [...]}``). Each entry:

    spec = "models/net.py:Net"        # required
    inputs = ["x=B,3,H,W"]            # and optionally dims, stages, exporter, init_kwargs,
    export_script = "export.py"       #   export_script, infer_script, device, seed, artifact
    check = "python serve/serve.py"   #   (the model's name in shared scripts), prefer, pick

Per file, ``<out>/patches/<path>.patch``: one git-style diff holding every model's edits to that
file (so patches of models sharing a serving script compose), all of them in ``<out>/all.patch``;
per model ``<out>/<name>.json`` (its result and what its fixes change); for the run,
``summary.json`` and ``summary.md``. A model whose result is on disk for the same model source,
scripts and options is not probed again, so a stopped run resumes (and its edits still go into
the patches). Models run side by side sharing one probe server and one limit on probes.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bisector.common import marks
from bisector.common.contract import stamp
from bisector.common.errors import BisectorError, UserError
from bisector.common.marks import REPAIR_OUT, mark, owned
from bisector.common.project import project_root
from bisector.common.units import format_bytes
from bisector.fix.project_check import compile_error, run_check
from bisector.fix.sources import registration_site
from bisector.judge.ceiling import Ceiling, over_budget, stage_ceilings
from bisector.judge.ceiling import describe as describe_ceilings
from bisector.judge.choice import not_chosen
from bisector.judge.fail_on import FailOn
from bisector.lab.stage import RUN_DIR as RUN_DIR_NAME
from bisector.lab.stage import source_hash
from bisector.lab.timings import PhaseTimes, Stopwatch, summed
from bisector.model.kinds import Kind
from bisector.model.spec import ModelSpec, library_imports, parse_model_spec
from bisector.options.config import ToolTable, as_list, find_pyproject, load_config, validate
from bisector.patching.diff import source_patches
from bisector.patching.from_report import ModelWork, compose, work_for
from bisector.pipeline import run as pipeline
from bisector.pipeline.prepare import Options, prepare
from bisector.pipeline.run import FixRequest, Status, with_stage_errors
from bisector.probe.pool import ProbePool
from bisector.repairs import fleet  # a module import: fleet imports this module too (see fleet.py)
from bisector.reports.html import write_repair_index
from bisector.reports.publish import publish
from bisector.store.caches import code_version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# A model's status in the summary: the pipeline's, where "unproven" reads as clean (the summary's
# verdict and stages columns say which stage was inconclusive).
CLEAN, FIXED, UNFIXED, ERROR = Status.CLEAN.value, Status.FIXED.value, Status.UNFIXED.value, Status.ERROR.value


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
    stages: Mapping[str, str] = field(default_factory=dict)  # stage -> verdict
    patches: tuple[str, ...] = ()  # the per-file patches that hold this model's edits
    check: str = ""  # passed | failed: ... | not run against your script | no patch
    # Stages that could not run, each with its one-line error, beside the status of the others.
    stage_errors: Mapping[str, str] = field(default_factory=dict)
    # Bounded shape-growth's ceiling per stage (ceiling.Ceiling.to_json), and the budget judged.
    ceilings: Mapping[str, Any] = field(default_factory=dict)
    budget: float | None = None
    timings: Mapping[str, Any] = field(default_factory=dict)  # PhaseTimes.to_json(): where the wall went

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "status": self.status,
            "verdict": self.verdict,
            "culprits": list(self.culprits),
            "kept": list(self.kept),
            "patch": self.patch,
            "error": self.error,
            "wall_s": round(self.wall_s, 2),
            "probes": self.probes,
            "resumed": self.resumed,
            "stages": dict(self.stages),
            "patches": list(self.patches),
            "check": self.check,
            "stage_errors": dict(self.stage_errors),
            "ceilings": {k: list(v) for k, v in self.ceilings.items()},
            "budget": self.budget,
            "timings": dict(self.timings),
        }

    def stages_text(self) -> str:
        """The stages cell: each stage's verdict, bounded growth with its ceiling (and the budget)."""
        parts = []
        for stage, verdict in self.stages.items():
            found = [Ceiling(**c) for c in self.ceilings.get(stage) or ()]
            text = f"{stage} {verdict}"
            if found:
                over = over_budget(found, self.budget)
                budget = (
                    f", {'over' if over else 'within'} the budget {format_bytes(self.budget)}"
                    if self.budget is not None
                    else ""
                )
                text += f" (bounded: {describe_ceilings(found)}{budget})"
            parts.append(text)
        return ", ".join(parts) or "-"


@dataclass(frozen=True)
class RepairSummary:
    results: tuple[ModelResult, ...]
    out: str
    wall_s: float
    counts: Mapping[str, int] = field(default_factory=dict)
    # Seconds per phase over every model, and the project's check command over all the patches.
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        statuses = {r.status for r in self.results}
        if ERROR in statuses:
            return 2
        return 1 if UNFIXED in statuses else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "models": [r.to_json() for r in self.results],
            "out": self.out,
            "wall_s": round(self.wall_s, 2),
            "counts": dict(self.counts),
            "timings": {"totals": dict(self.timings)},
        }

    def markdown(self) -> str:

        lines = [
            "| model | status | verdict | stages | culprits | chosen fix | growth before -> after | trade-off "
            "| patch | check |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.results:
            culprits = (
                ", ".join(f"`{c['region'] or '<root>'}` ({c['stage']} {c['kind']}{_site(c)})" for c in r.culprits)
                or "-"
            )
            fixes = (
                "; ".join(
                    k["fixer"]
                    + (f" (removes behaviour: {k['removes_behaviour']})" if k.get("removes_behaviour") else "")
                    for k in r.kept
                )
                or "-"
            )
            change = "; ".join(_change(k, format_bytes) for k in r.kept) or "-"
            trade = "; ".join(_trade(k, format_bytes) for k in r.kept) or "-"
            patch = ", ".join(f"[{n}](patches/{n})" for n in r.patches) or "no patch"
            status = with_stage_errors(r.status, r.stage_errors) + (f": {r.error}" if r.error else "")
            stages = r.stages_text()
            lines.append(
                f"| `{r.spec}` | {status} | {r.verdict or '-'} | {stages} | {culprits} | {fixes} | {change} | "
                f"{trade} | {patch} | {r.check or '-'} |"
            )
        return "\n".join(lines) + "\n"


def _site(c: Mapping[str, Any]) -> str:
    return f", hook registered at {c['registered_at']}" if c.get("registered_at") else ""


def _trade(k: Mapping[str, Any], fmt: Any) -> str:
    """Upfront bytes, and the largest RSS over the declared range without -> with the fix."""
    parts = []
    if k.get("upfront_bytes") is not None:
        parts.append(f"upfront {fmt(k['upfront_bytes'], True)}")
    if k.get("steady_before_bytes") is not None and k.get("steady_after_bytes") is not None:
        parts.append(f"steady {fmt(k['steady_before_bytes'])} -> {fmt(k['steady_after_bytes'])}")
    if k.get("costs_more_than_it_saves"):
        parts.append("costs more up front than it saves")
    return ", ".join(parts) or "-"


def _change(k: Mapping[str, Any], fmt: Any) -> str:
    """The figure the fix was judged on, before -> after (a clean verdict reads as 0)."""
    unit = k.get("judged_on", "bytes/call")
    clean = k.get("after_kind") == Kind.CLEAN
    if unit == "objects/call":
        return (
            f"{k.get('before_objects_per_call') or 0:+.0f} -> "
            f"{0 if clean else k.get('after_objects_per_call') or 0:+.0f} objects/call"
        )
    if unit == "objects/new shape":
        return (
            f"{k.get('before_objects_per_new_shape') or 0:+.0f} -> "
            f"{0 if clean else k.get('after_objects_per_new_shape') or 0:+.0f} objects/new shape"
        )
    if unit == "bytes/call":
        return (
            f"{fmt(k.get('before_bytes_per_call'), True)} -> "
            f"{'0 B' if clean else fmt(k.get('after_bytes_per_call'), True)}/call"
        )
    return (
        f"{fmt(k.get('before_bytes_per_new_shape'), True)} -> "
        f"{'0 B' if clean else fmt(k.get('after_bytes_per_new_shape'), True)}/new shape"
    )


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

        tool = data.get("tool") if isinstance(data, dict) else None
        nested = isinstance(tool, dict) and "bisector" in tool
        table = validate(ToolTable, tool["bisector"] if nested else data, manifest, "[tool.bisector]" if nested else "")
        base = str(path.resolve().parent)
        source = str(path.resolve()) if nested else None
    else:
        cfg = load_config(None, config)
        if cfg.path is None:
            where = config or find_pyproject(Path.cwd()) or "the current folder"
            raise UserError(
                f"no [tool.bisector] table in {where}; list models as [[tool.bisector.models]] or pass --manifest"
            )
        table = dict(cfg.table)
        base = str(Path(cfg.path).parent)
        source = cfg.path
    root = project_root(Path(base)).resolve()
    models = table.get("models") or []
    if not isinstance(models, list) or not models:
        raise UserError('no models to repair: add [[tool.bisector.models]] entries with spec = "path.py:Name"')
    defaults = {k: v for k, v in table.items() if k != "models"}
    out = []
    for i, entry in enumerate(models):
        if not isinstance(entry, dict) or not isinstance(entry.get("spec"), str):
            raise UserError(f'model entry {i + 1} has no spec = "path.py:Name"')
        options = {**defaults, **{k: v for k, v in entry.items() if k != "spec"}}
        for key in ("check", "prefer", "artifact"):
            if key in options and not isinstance(options[key], str):
                raise UserError(f"model entry {i + 1} ({entry['spec']}): {key} must be a string")
        if "pick" in options and not (
            isinstance(options["pick"], int) and not isinstance(options["pick"], bool) and options["pick"] >= 1
        ):
            raise UserError(
                f"model entry {i + 1} ({entry['spec']}): pick must be a whole number from 1 (the N-th kept fix)"
            )
        file_part, _, name = entry["spec"].rpartition(":")
        model_file = (Path(base) / file_part).resolve()
        _check_inside(model_file, root, f"model entry {i + 1} ({entry['spec']})")
        out.append(
            ModelEntry(spec=f"{model_file}:{name}", options=options, base=base, label=entry["spec"], config=source)
        )
    return out


def _check_inside(model_file: Path, root: Path, what: str) -> None:
    """repair writes one patch set for the project the manifest is in (paths from its root, for
    `git apply`); a model file outside it could only be named by an absolute path there, which
    `git apply` rejects. Refused before any model is loaded."""
    if not model_file.is_relative_to(root):
        raise UserError(
            f"{what}: {model_file} is outside the project {root} the manifest belongs to, so no patch could "
            "name it; list it in a manifest of its own project, or put the manifest in a folder above both"
        )


def _key(entry: ModelEntry, extra: Mapping[str, Any]) -> str:

    path, _, name = entry.spec.rpartition(":")
    files = [path] + [p for p in (entry.path("export_script"), entry.path("infer_script")) if p]
    h = hashlib.sha256(
        json.dumps({"spec": entry.spec, "options": entry.options, "extra": extra}, sort_keys=True, default=str).encode()
    )
    h.update(source_hash(ModelSpec(path, name)).encode())
    for f in files[1:]:
        try:
            h.update(Path(f).read_bytes())
        except OSError:
            pass
    h.update(code_version().encode())
    return h.hexdigest()[:20]


def model_key(entry: ModelEntry) -> str:
    """The model's name in shared scripts: `artifact` in its entry, else its file's stem
    (`models/tagger.py` -> "tagger", served from `tagger.onnx`)."""
    return str(entry.options.get("artifact") or Path(entry.spec.rpartition(":")[0]).stem)


def entry_options(entry: ModelEntry, jobs: int | None) -> Options:
    """A manifest entry's options as the CLI's flags would give them."""
    o = entry.options
    return Options(
        inputs=tuple(o.get("inputs") or ()),
        dims=tuple(o.get("dims") or ()),
        stages=tuple(o["stages"]) if o.get("stages") else None,
        exporter=o.get("exporter"),
        device=o.get("device"),
        init_kwargs=o.get("init_kwargs"),
        seed=o.get("seed"),
        noise_rss=o.get("noise_rss"),
        noise_gpu=o.get("noise_gpu"),
        retries=o.get("retries"),
        timeout_s=o.get("timeout"),
        mem_cap=o.get("mem_cap"),
        jobs=jobs,
        fresh=bool(o.get("fresh")),
        metric=o.get("metric"),
        export_script=_existing(entry.path("export_script")),
        infer_script=_existing(entry.path("infer_script")),
        artifact=model_key(entry),
        floor=tuple(as_list(o.get("floor"), "floor")) or None,
        config=entry.config,
    )


def _existing(path: str | None) -> str | None:
    # A script the manifest names but the project lacks adds no settings; patching it says why.
    return path if path and Path(path).is_file() else None


def repair_one(
    entry: ModelEntry,
    out: Path,
    pool: Any,
    executor: Any,
    run_dir: Path,
    allow_output_changes: bool,
    jobs: int | None,
    report_dir: Path | None = None,
) -> tuple[ModelResult, Any]:
    started = time.perf_counter()
    o = entry.options
    pick = int(o["pick"]) if o.get("pick") else None
    try:
        request = FixRequest(
            fixers=tuple(o.get("fixers") or ()),
            allow_output_changes=allow_output_changes,
            pick=pick,
            prefer=o.get("prefer"),
            patch=False,
            unmeasured_is_error=True,
            fail_on=FailOn.parse(o.get("fail_on"), o.get("budget")),
            # A manifest's prefer/pick may ask for a fix of growth the policy accepts.
            only_failing=not (pick or o.get("prefer")),
        )
        prepared = prepare(entry.spec, replace(entry_options(entry, jobs), run_dir=str(run_dir)))
        outcome = pipeline.fix(prepared, request, pool=pool, executor=executor)
    except BisectorError as exc:
        return ModelResult(
            entry.name,
            entry.label or entry.spec,
            ERROR,
            error=str(exc).splitlines()[0],
            wall_s=time.perf_counter() - started,
        ), None
    found, report = outcome.found, outcome.report
    assert found is not None and report is not None
    work = work_for(
        report,
        model_key(entry),
        entry.path("export_script"),
        entry.path("infer_script"),
        pick=pick,
        prefer=o.get("prefer"),
    )
    chosen = {id(e) for e in outcome.chosen}
    keys = (
        "region",
        "stage",
        "kind",
        "growth_bytes_per_call",
        "growth_bytes_per_new_shape",
        "own_code",
        "registered_at",
    )
    culprits = tuple({k: v for k, v in c.to_json().items() if k in keys} for c in found.culprits)
    culprits = tuple(
        {**c, "registered_at": registration_site(prepared.model, c["region"])} if c.get("own_code") else c
        for c in culprits
    )
    best = [e.to_json() for c in found.culprits for e in report.for_culprit(c) if id(e) in chosen]
    # A model without culprits is clean here even when a stage was inconclusive: the summary's
    # verdict and stages columns show that (as before the one pipeline).
    status = CLEAN if not found.culprits or outcome.status == Status.UNPROVEN else outcome.status.value
    note = ""
    if found.culprits and len(best) < len(found.culprits) and all(report.fixed(c) for c in found.culprits):
        unpicked = [c for c in found.culprits if not any(id(e) in chosen for e in report.for_culprit(c))]
        why = "; ".join(not_chosen([e for e in report.for_culprit(c) if e.kept]) for c in unpicked)
        note = f"{why}; choose one with `prefer` or `pick`"
    stages = {st: r.kind for st, r in found.measure.stages.items()}
    ceilings = {
        st: [c.to_json() for c in found_ceilings]
        for st, r in found.measure.stages.items()
        if (found_ceilings := stage_ceilings(r, prepared.plan.dims))
    }
    # What goes upstream: a repro bundle for every culprit no fix could flatten; the HTML report when
    # asked, with this model's own source edits (the shared scripts' patches are composed later).
    own, _ = source_patches(work.edits, str(project_root(prepared.model.path))) if work is not None else ([], [])
    publish(
        report,
        report_dir / entry.name if report_dir else None,
        out / "bundles" / entry.name if status == UNFIXED else None,
        [{"path": p.rel, "summary": p.summary, "diff": p.diff} for p in own if p.changed],
        unfixed_only=True,
    )
    return ModelResult(
        entry.name,
        entry.label or entry.spec,
        status,
        verdict=found.verdict,
        culprits=culprits,
        kept=tuple(best),
        error=note,
        wall_s=time.perf_counter() - started,
        probes=report.probes + found.probes,
        stages=stages,
        stage_errors=dict(outcome.stage_errors),
        ceilings=ceilings,
        budget=request.fail_on.budget,
        timings=outcome.phase_times.to_json(),
    ), work


def _patch_name(rel: str) -> str:
    return rel.replace("/", "__").replace("\\", "__") + ".patch"


@dataclass(frozen=True)
class Progress:
    """Where a run stands when a result arrives: models done (this run's and resumed), running, queued."""

    done: int
    running: int
    queued: int
    total: int


@dataclass(frozen=True)
class Shard:
    """`--shard I/N`: the models whose name hashes to I-1 modulo N. The hash is of the name as
    written in the manifest, so every CI job (any checkout path, any machine) draws the same split."""

    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise UserError(f"--shard {text}: expected I/N with 1 <= I <= N, e.g. --shard 1/4")
        return cls(int(m.group(1)), int(m.group(2)))

    def holds(self, entry: ModelEntry) -> bool:
        digest = hashlib.sha256(entry.name.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _load_done(entry: ModelEntry, out: Path, key: str) -> tuple[ModelResult, Any] | None:
    """The model's result kept in <out>/<name>.json by an earlier run with the same key."""
    done = out / f"{entry.name}.json"
    if not key or not done.exists():
        return None
    try:
        data = json.loads(done.read_text())
        if data.get("key") != key:
            return None

        r = data["result"]
        result = ModelResult(
            **{**r, "culprits": tuple(r["culprits"]), "kept": tuple(r["kept"]), "patches": (), "check": ""}
        )
        return result, ModelWork.from_json(data["work"]) if data.get("work") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _safe_key(entry: ModelEntry, extra: Mapping[str, Any]) -> str:
    try:
        return _key(entry, extra)
    except Exception:  # noqa: BLE001 - a missing file is reported when the model runs
        return ""


def run_local(
    todo: list[ModelEntry],
    out: Path,
    jobs: int,
    models_at_once: int,
    allow_output_changes: bool,
    fresh: bool,
    on_start: Any = None,
    report_dir: str | Path | None = None,
) -> Iterable[tuple[ModelEntry, ModelResult, Any]]:
    """The local executor: models side by side in threads, one probe server, one --jobs limit.
    Yields (entry, result, work) as each model finishes; a model's crash is its own error row."""

    preload: list[str] = []
    for entry in todo:
        try:
            preload += library_imports(parse_model_spec(entry.spec))
        except BisectorError:
            pass
    with (
        ProbePool(fresh=fresh, preload=tuple(dict.fromkeys(preload))) as pool,
        ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="bisector-probe") as probes,
        ThreadPoolExecutor(max_workers=max(1, models_at_once), thread_name_prefix="bisector-model") as ex,
    ):
        reports = Path(report_dir) if report_dir else None
        futures = {
            ex.submit(repair_one, e, out, pool, probes, out, allow_output_changes, jobs, reports): e for e in todo
        }
        if on_start is not None:
            on_start(lambda: sum(1 for f in futures if f.running()))
        for fut in as_completed(futures):
            entry = futures[fut]
            work = None
            try:
                result, work = fut.result()
            except Exception as exc:  # noqa: BLE001 - one model's bug never loses the others
                result = ModelResult(
                    entry.name, entry.label or entry.spec, ERROR, error=f"internal error: {type(exc).__name__}: {exc}"
                )
            yield entry, result, work


def repair(
    models: Iterable[ModelEntry],
    out: str | Path = ".bisector/repair",
    jobs: int | None = None,
    models_at_once: int = 2,
    allow_output_changes: bool = False,
    fresh: bool = False,
    progress: Any = None,
    report_dir: str | Path | None = None,
    executor: str = "local",
    address: str | None = None,
    shard: Shard | None = None,
) -> RepairSummary:
    """Repair every model (those of `shard` only, when given) with the local executor or on a Ray
    cluster (bisector/repairs/fleet.py); `<out>/` comes out the same either way. `progress(result, Progress)`
    is called as each model's result arrives, and the summary so far is written then too."""
    started = time.perf_counter()
    models = list(models)
    if shard is not None:
        models = [e for e in models if shard.holds(e)]
    out = claim_output(Path(out))
    extra = {"allow_output_changes": allow_output_changes}
    results: dict[str, ModelResult] = {}
    works: dict[str, Any] = {}
    todo: list[ModelEntry] = []
    for entry in models:
        kept = _load_done(entry, out, _safe_key(entry, extra))
        if kept is None:
            todo.append(entry)
            continue

        results[entry.name] = replace(kept[0], resumed=True)
        if kept[1] is not None:
            works[entry.name] = kept[1]
    n_jobs = jobs or (os.cpu_count() or 1)
    if progress is not None and _takes_one(progress):
        one = progress  # api users' callbacks from before Progress existed: progress(result)
        progress = lambda result, state: one(result)  # noqa: E731
    if todo:
        running: list[Any] = [lambda: 0]
        if executor == "ray":
            arrivals = fleet.run_ray(
                todo,
                allow_output_changes=allow_output_changes,
                jobs=jobs,
                fresh=fresh,
                address=address,
                on_start=lambda f: running.__setitem__(0, f),
                report_dir=report_dir,
            )
        else:
            arrivals = run_local(
                todo,
                out,
                n_jobs,
                models_at_once,
                allow_output_changes,
                fresh,
                on_start=lambda f: running.__setitem__(0, f),
                report_dir=report_dir,
            )
        for entry, result, work in arrivals:
            results[entry.name] = result
            if work is not None:
                works[entry.name] = work
            if result.status != ERROR:
                (out / f"{entry.name}.json").write_text(
                    json.dumps(
                        {
                            "key": _key(entry, extra),
                            "result": result.to_json(),
                            "work": work.to_json() if work is not None else None,
                        },
                        indent=1,
                    )
                )
            # The summary so far, so a run stopped or lost halfway still shows what it finished.
            pending = [e.name for e in models if e.name not in results]
            _write_summary(
                RepairSummary(
                    tuple(results[e.name] for e in models if e.name in results),
                    str(out),
                    time.perf_counter() - started,
                    _counts(results.values()),
                ),
                out,
                pending,
            )
            if progress is not None:
                now_running = min(running[0](), len(pending))
                progress(result, Progress(len(results), now_running, len(pending) - now_running, len(models)))
    summary = finish(models, results, works, out, started)
    if report_dir:
        write_repair_index(stamp(summary.to_json(), "repair"), report_dir)
    return summary


def _takes_one(fn: Any) -> bool:

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return False
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) == 1


def _counts(results: Iterable[ModelResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def _legacy_output(out: Path) -> bool:
    """A repair output of bisector before the mark: its stamped summary.json."""
    try:
        return json.loads((out / "summary.json").read_text()).get("report_kind") == "repair"
    except (OSError, ValueError, AttributeError):
        return False


def claim_output(out: Path) -> Path:
    """The --out folder, made and marked as bisector's; one that already holds what bisector did
    not write is refused before any probe (repair replaces its own old patches there, and must
    never replace or remove a user's)."""
    if out.exists() and not marks.real_dir(out):
        raise UserError(f"--out {out} is not a folder (or is a symlink): choose a new or empty folder")
    try:
        if out.parent.name == RUN_DIR_NAME:  # the default, .bisector/repair: inside a run directory
            mark(out.parent, marks.RUN_DIR)
        mark(out, REPAIR_OUT)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    if not (owned(out, REPAIR_OUT) or _legacy_output(out)):
        raise UserError(
            f"--out {out} holds files bisector did not write: choose a new or empty folder "
            "(repair replaces its own old patches there)"
        )
    return out


def _write_summary(summary: RepairSummary, out: Path, pending: list[str] | None = None) -> None:
    data = summary.to_json()
    if pending:
        data["pending"] = pending  # only while models are still running
    (out / "summary.json").write_text(json.dumps(stamp(data, "repair"), indent=2))
    (out / "summary.md").write_text(summary.markdown())


def finish(
    models: list[ModelEntry], results: dict[str, ModelResult], works: Mapping[str, Any], out: Path, started: float
) -> RepairSummary:
    """Compose the patches and write the final summary: the same for the local executor, Ray and merged shards."""
    watch = Stopwatch()
    with watch.phase("check", "patches"):  # composed over every model, then proven with the check command
        results = write_patches(models, results, works, out)
    ordered = tuple(results[e.name] for e in models)
    times = summed([PhaseTimes.from_json(r.timings) for r in ordered if not r.resumed] + [watch.snapshot()])
    summary = RepairSummary(ordered, str(out), time.perf_counter() - started, _counts(ordered), times)
    _write_summary(summary, out)
    return summary


def merge(
    models: Iterable[ModelEntry], outs: Iterable[str | Path], out: str | Path, allow_output_changes: bool = False
) -> RepairSummary:
    """Join the outputs of `repair --shard I/N` runs into one: every model's result and edits are
    taken from the shard output that holds them (same key: same source, scripts and options), then
    patches are composed and the project's check run over all of them, as one unsharded run would."""

    started = time.perf_counter()
    models = list(models)
    outs = [Path(o) for o in outs]
    for o in outs:
        if not (o / "summary.json").is_file():
            raise UserError(
                f"{o} is not a repair output (no summary.json): pass the --out folders of `bisector repair --shard I/N`"
            )
    out = claim_output(Path(out))
    extra = {"allow_output_changes": allow_output_changes}
    rows: dict[str, tuple[Path, Mapping[str, Any]]] = {}
    for o in outs:
        for row in json.loads((o / "summary.json").read_text()).get("models", []):
            rows.setdefault(row["name"], (o, row))
    results: dict[str, ModelResult] = {}
    works: dict[str, Any] = {}
    missing = []
    for entry in models:
        key = _safe_key(entry, extra)
        for o in outs:
            kept = _load_done(entry, o, key)
            if kept is None:
                continue
            results[entry.name] = kept[0]
            if kept[1] is not None:
                works[entry.name] = kept[1]
            if o.resolve() != out.resolve():
                shutil.copyfile(o / f"{entry.name}.json", out / f"{entry.name}.json")  # the merged output resumes too
            break
        else:
            if entry.name in rows and rows[entry.name][1].get("status") == ERROR:
                r = rows[entry.name][1]  # an error is not kept per model (it reruns), only in the summary
                results[entry.name] = ModelResult(
                    **{**r, "culprits": tuple(r["culprits"]), "kept": tuple(r["kept"]), "patches": tuple(r["patches"])}
                )
            else:
                missing.append(entry.label or entry.spec)
    if missing:
        raise UserError(
            f"no result for {', '.join(missing)} in {' '.join(map(str, outs))}: run its shard (or rerun a "
            "shard whose sources changed), then merge again"
        )
    return finish(models, results, works, out, started)


def write_patches(
    models: list[ModelEntry], results: dict[str, ModelResult], works: Mapping[str, Any], out: Path
) -> dict[str, ModelResult]:
    """Every model's edits composed into one patch per file, proven with the project's check
    (`check = "python serve/serve.py"`) in a shadow copy when the manifest names one: a model whose
    edits make it fail (and the original passes) is left out, and its result says why. Patches
    of an earlier run are replaced; no patch is an empty file."""
    patch_dir = out / "patches"
    if patch_dir.exists():
        for old in patch_dir.glob("*.patch"):
            old.unlink()
    (out / "all.patch").unlink(missing_ok=True)
    for entry in models:  # per-model patches of older versions: they would not compose
        (out / f"{entry.name}.patch").unlink(missing_ok=True)
    active = [e for e in models if e.name in works and results[e.name].status != ERROR]
    if not active:
        return results
    root = project_root(Path(models[0].base))
    check = next((e.options.get("check") for e in models if e.options.get("check")), None)
    timeout = float(next((e.options.get("check_timeout") for e in models if e.options.get("check_timeout")), 600))
    by_key = {works[e.name].key: e for e in active}
    why: dict[str, str] = {}

    def build(entries: list[ModelEntry]) -> tuple[list[Any], dict[str, list[str]], dict[str, list[str]]]:
        return compose([works[e.name] for e in entries], root)

    def attempt(ps: list[Any]) -> tuple[bool, str]:
        broken = compile_error(ps)
        if broken or not check:
            return not broken, broken
        return run_check(root, check, ps, timeout)

    patches, notes, files = build(active)
    check_state = "passed" if check else "not run against your script"
    reference = True
    if patches and check:
        reference, ref_why = run_check(root, check, [], timeout)
        if not reference:
            check_state = f"not proven: `{check}` fails without the patches too ({ref_why})"
    if patches and reference:
        ok, fail = attempt(patches)
        if not ok:
            # Find the models whose edits break it, each tried alone, and offer the rest.
            keep = []
            for e in active:
                alone, _, _ = build([e])
                good, bad = attempt(alone) if alone else (True, "")
                if good:
                    keep.append(e)
                else:
                    why[e.name] = bad
            patches, notes, files = build(keep)
            ok, fail = attempt(patches) if patches else (True, "")
            if not ok:
                for e in keep:
                    why[e.name] = fail
                patches, notes, files = [], {}, {}
    patch_dir.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for p in patches:
        names[str(Path(p.path).resolve())] = _patch_name(p.rel)
        # bytes: each file's own line endings and encoding, so the patch applies (text would lose a "\r")
        (patch_dir / names[str(Path(p.path).resolve())]).write_bytes(p.diff_bytes)
    if patches:
        (out / "all.patch").write_bytes(b"".join(p.diff_bytes for p in patches))
    updated = dict(results)
    for key, e in by_key.items():
        r = results[e.name]
        mine = tuple(names[f] for f in files.get(key, []) if f in names)
        note = "; ".join(x for x in [r.error, *notes.get(key, [])] if x)
        if e.name in why:
            updated[e.name] = replace(
                r,
                status=UNFIXED if r.culprits else r.status,
                patches=(),
                check=f"failed: {why[e.name]}",
                error="; ".join(x for x in [note, "patch not offered: the project's check fails with it"] if x),
            )
        else:
            updated[e.name] = replace(
                r,
                patches=mine,
                check=check_state if mine else "no patch",
                error=note,
                patch=str(patch_dir / mine[0]) if mine else None,
            )
    return updated
