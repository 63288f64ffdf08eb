"""A repair run over many models, and the join of sharded runs.

In ``<out>/``: per model ``<name>.json`` (its result and what its fixes change); the patches
(compose.py); for the run, ``summary.json`` and ``summary.md``. A model whose result is on disk
for the same model source, scripts and options is not probed again (resume.py), so a stopped run
resumes (and its edits still go into the patches). The models run side by side on this machine
(local.py) or as Ray tasks (ray.py); `<out>/` comes out the same either way.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from bisector.common import marks
from bisector.common.contract import stamp
from bisector.common.errors import UserError
from bisector.common.marks import REPAIR_OUT, mark, owned
from bisector.lab.stage import RUN_DIR as RUN_DIR_NAME
from bisector.lab.timings import PhaseTimes, Stopwatch, summed
from bisector.patching.from_report import ModelWork
from bisector.repairs.compose import write_patches
from bisector.repairs.local import run_local
from bisector.repairs.manifest import ModelEntry
from bisector.repairs.one import RepairSettings, repair_one
from bisector.repairs.ray import run_ray
from bisector.repairs.results import ERROR, ModelResult, RepairSummary, count_statuses
from bisector.repairs.resume import load_done, result_key, safe_key, save_done
from bisector.reports.html import write_repair_index


@dataclass(frozen=True)
class RunStanding:
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


# progress(result, RunStanding), called as each model's result arrives.
OnResult = Callable[[ModelResult, RunStanding], None]


def repair(
    models: Iterable[ModelEntry],
    settings: RepairSettings = RepairSettings(),
    progress: Callable[..., None] | None = None,
    shard: Shard | None = None,
) -> RepairSummary:
    """Repair every model (those of `shard` only, when given) with the local executor or on a Ray
    cluster (ray.py); `<out>/` comes out the same either way. `progress(result, RunStanding)` is
    called as each model's result arrives, and the summary so far is written then too."""
    started = time.perf_counter()
    models = [e for e in models if shard is None or shard.holds(e)]
    out = claim_output(Path(settings.out))
    results, works, todo = _resumed(models, out, settings.extra)
    report = _as_two_arguments(progress)
    running: list[Callable[[], int]] = [lambda: 0]
    for entry, result, work in _arrivals(todo, settings, out, on_start=lambda f: running.__setitem__(0, f)):
        results[entry.name] = result
        if work is not None:
            works[entry.name] = work
        if result.status != ERROR:
            save_done(entry, out, result_key(entry, settings.extra), result, work)
        # The summary so far, so a run stopped or lost halfway still shows what it finished.
        pending = [e.name for e in models if e.name not in results]
        so_far = tuple(results[e.name] for e in models if e.name in results)
        _write_summary(
            RepairSummary(so_far, str(out), time.perf_counter() - started, count_statuses(so_far)), out, pending
        )
        if report is not None:
            now_running = min(running[0](), len(pending))
            report(result, RunStanding(len(results), now_running, len(pending) - now_running, len(models)))
    summary = finish(models, results, works, out, started)
    if settings.report_dir:
        write_repair_index(stamp(summary.to_json(), "repair"), settings.report_dir)
    return summary


def _resumed(
    models: list[ModelEntry], out: Path, extra: Mapping[str, Any]
) -> tuple[dict[str, ModelResult], dict[str, ModelWork], list[ModelEntry]]:
    """The results and edits kept in `out` by an earlier run, and the models still to repair."""
    results: dict[str, ModelResult] = {}
    works: dict[str, ModelWork] = {}
    todo: list[ModelEntry] = []
    for entry in models:
        kept = load_done(entry, out, safe_key(entry, extra))
        if kept is None:
            todo.append(entry)
            continue
        results[entry.name] = replace(kept[0], resumed=True)
        if kept[1] is not None:
            works[entry.name] = kept[1]
    return results, works, todo


def _arrivals(
    todo: list[ModelEntry], settings: RepairSettings, out: Path, on_start: Callable[[Callable[[], int]], None]
) -> Iterable[tuple[ModelEntry, ModelResult, ModelWork | None]]:
    """Each model's (entry, result, work) as it finishes, from the executor the settings name."""
    if not todo:
        return []
    job = partial(repair_one, settings=settings)
    if settings.executor == "ray":
        return run_ray(todo, job, jobs=settings.jobs, fresh=settings.fresh, address=settings.address, on_start=on_start)
    return run_local(
        todo,
        job,
        out=out,
        jobs=settings.jobs or (os.cpu_count() or 1),
        models_at_once=settings.models_at_once,
        fresh=settings.fresh,
        on_start=on_start,
    )


def _as_two_arguments(progress: Callable[..., None] | None) -> OnResult | None:
    """api users' callbacks from before RunStanding existed take one argument: progress(result)."""
    if progress is None or not _takes_one(progress):
        return progress
    return lambda result, standing: progress(result)


def _takes_one(fn: Any) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return False
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) == 1


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
    models: list[ModelEntry],
    results: dict[str, ModelResult],
    works: Mapping[str, ModelWork],
    out: Path,
    started: float,
) -> RepairSummary:
    """Compose the patches and write the final summary: the same for the local executor, Ray and merged shards."""
    watch = Stopwatch()
    with watch.phase("check", "patches"):  # composed over every model, then proven with the check command
        results = write_patches(models, results, works, out)
    ordered = tuple(results[e.name] for e in models)
    times = summed([PhaseTimes.from_json(r.timings) for r in ordered if not r.resumed] + [watch.snapshot()])
    summary = RepairSummary(ordered, str(out), time.perf_counter() - started, count_statuses(ordered), times)
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
    extra = RepairSettings(allow_output_changes=allow_output_changes).extra
    rows: dict[str, Mapping[str, Any]] = {}
    for o in outs:
        for row in json.loads((o / "summary.json").read_text()).get("models", []):
            rows.setdefault(row["name"], row)
    results: dict[str, ModelResult] = {}
    works: dict[str, ModelWork] = {}
    missing = []
    for entry in models:
        found = _kept_in_shards(entry, outs, out, safe_key(entry, extra))
        if found is not None:
            results[entry.name] = found[0]
            if found[1] is not None:
                works[entry.name] = found[1]
        elif rows.get(entry.name, {}).get("status") == ERROR:
            # An error is not kept per model (it reruns), only in the summary.
            results[entry.name] = ModelResult.from_json(rows[entry.name])
        else:
            missing.append(entry.label or entry.spec)
    if missing:
        raise UserError(
            f"no result for {', '.join(missing)} in {' '.join(map(str, outs))}: run its shard (or rerun a "
            "shard whose sources changed), then merge again"
        )
    return finish(models, results, works, out, started)


def _kept_in_shards(
    entry: ModelEntry, outs: list[Path], out: Path, key: str
) -> tuple[ModelResult, ModelWork | None] | None:
    """The model's result and edits from the first shard output that keeps them, copied into the
    merged output (so it resumes too)."""
    for o in outs:
        kept = load_done(entry, o, key)
        if kept is None:
            continue
        if o.resolve() != out.resolve():
            shutil.copyfile(o / f"{entry.name}.json", out / f"{entry.name}.json")
        return kept
    return None
