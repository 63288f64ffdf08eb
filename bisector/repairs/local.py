"""The local executor: models side by side in threads on this machine, sharing one probe server
and one limit on probes (--jobs). It runs whatever job it is given for each model (run.py gives
it one.repair_one), so it knows nothing of the Ray executor or of what a repair is."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from bisector.common.errors import BisectorError
from bisector.model.spec import library_imports, parse_model_spec
from bisector.probe.pool import ProbePool, exports, warms
from bisector.repairs.manifest import ModelEntry
from bisector.repairs.results import ModelResult

# One model's repair: job(entry, pool=, probes=, run_dir=, jobs=) -> (ModelResult, ModelWork | None).
Job = Callable[..., tuple[ModelResult, Any]]


def run_local(
    todo: list[ModelEntry],
    job: Job,
    *,
    out: Path,
    jobs: int,
    models_at_once: int,
    fresh: bool,
    on_start: Callable[[Callable[[], int]], None] | None = None,
) -> Iterable[tuple[ModelEntry, ModelResult, Any]]:
    """Yields (entry, result, work) as each model finishes; a model's crash is its own error row.
    Every model's run data goes in `out`; `on_start` is given a count of the models running."""
    preload: list[str] = []
    for entry in todo:
        try:
            preload += library_imports(parse_model_spec(entry.spec))
        except BisectorError:
            pass
    with (
        ProbePool(
            fresh=fresh,
            preload=tuple(dict.fromkeys(preload)),
            exporter=any(exports(e.options.get("stages")) for e in todo),
            warm_export=any(warms(e.options.get("stages"), e.options.get("exporter")) for e in todo),
        ) as pool,
        ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="bisector-probe") as probes,
        ThreadPoolExecutor(max_workers=max(1, models_at_once), thread_name_prefix="bisector-model") as ex,
    ):
        futures = {ex.submit(job, e, pool=pool, probes=probes, run_dir=out, jobs=jobs): e for e in todo}
        if on_start is not None:
            on_start(lambda: sum(1 for f in futures if f.running()))
        for fut in as_completed(futures):
            entry = futures[fut]
            work = None
            try:
                result, work = fut.result()
            except Exception as exc:  # noqa: BLE001 - one model's bug never loses the others
                result = ModelResult.failed(entry, f"internal error: {type(exc).__name__}: {exc}")
            yield entry, result, work
