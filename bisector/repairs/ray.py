"""`bisector repair --executor ray`: one Ray task per model, on whatever node has the CPUs.

Each task uses a probe server on the node where it lands (started by the first task of each Ray
worker process and kept for the next), so probes never cross machines and the fork server stays
as it is on a laptop; the task runs the job it is given (run.py gives it the same
`one.repair_one` as the local executor's), and returns the model's result and edits as JSON: the
data a resumed run reads back from `<out>/<name>.json`. The driver writes `<out>/` from them
exactly as with the local executor (run.repair), so the summary and patches are the same
whichever executor ran.

Ray is an optional extra (`pip install 'bisector[ray]'`) and is imported only here, inside
functions: `bisector --help` never pays for it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bisector.common.errors import UserError
from bisector.model.spec import library_imports, parse_model_spec
from bisector.patching.from_report import ModelWork
from bisector.probe.pool import ProbePool, exports, warms
from bisector.probe.workdirs import sweep_stale_workdirs, write_owner
from bisector.repairs.manifest import ModelEntry
from bisector.repairs.results import ModelResult

# One model's repair: job(entry, pool=, probes=, run_dir=, jobs=) -> (ModelResult, ModelWork | None),
# pickled into each task (a functools.partial of a module-level function travels by name).
Job = Callable[..., tuple[ModelResult, Any]]

# A task whose worker dies (node lost, worker killed, OOM killer) is run once more, then
# reported as an error for that model. Exceptions raised by our own code are not retried:
# they would fail the same way again, and the job (repair_one) already turns user errors into results.
TASK_RETRIES = 1

INSTALL_HINT = "--executor ray needs Ray: pip install 'bisector[ray]' (or pip install ray)"


def require_ray() -> None:
    """A one-line error, before any model runs, when Ray is not installed."""

    if importlib.util.find_spec("ray") is None:
        raise UserError(INSTALL_HINT)


# The probe server of this Ray worker process, kept between its tasks: Ray reuses a worker for
# the next task, and starting a server (importing torch, onnx and onnxruntime) costs seconds a
# model. A server never runs user code itself (every probe is a fresh fork), so one model cannot
# leave anything behind for the next. It goes with the worker: its stdin closes when the worker
# exits or is killed, and it exits then.
_POOL: dict[tuple[bool, tuple[str, ...]], Any] = {}


WORKDIR_PREFIX = "bisector-ray-"


def _sweep_dead_workers(tmp: Path) -> None:
    """Remove the work folders of Ray workers that are gone: Ray ends its workers without running
    their exit handlers (and a killed one runs none), so each new worker sweeps for the dead. Only
    folders that name their owner are touched, as the probe pool's own sweep does."""
    sweep_stale_workdirs(tmp, WORKDIR_PREFIX)


def _worker_pool(fresh: bool, preload: tuple[str, ...], exporter: bool = True, warm: bool = True) -> Any:

    key = (fresh, preload, exporter, warm)
    if key not in _POOL:
        for old in _POOL.values():  # another model's libraries: one server a worker at a time
            old.close()
        _POOL.clear()
        tmp = Path(tempfile.gettempdir())
        _sweep_dead_workers(tmp)
        workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=tmp))
        write_owner(workdir)
        _POOL[key] = ProbePool(workdir, fresh=fresh, preload=preload, exporter=exporter, warm_export=warm)
    return _POOL[key]


def _repair_task(entry: ModelEntry, job: Job, jobs: int, fresh: bool) -> dict[str, Any]:
    """The body of one model's Ray task, on the node where it landed: a local probe server, the
    job (the repair of one model), and the result as JSON-safe data for the driver."""

    try:
        preload = tuple(library_imports(parse_model_spec(entry.spec)))
    except Exception:  # noqa: BLE001 - a bad spec is reported by the job, as locally
        preload = ()

    stages = entry.options.get("stages")
    pool = _worker_pool(fresh, preload, exports(stages), warms(stages, entry.options.get("exporter")))
    # Run data (recorded inputs, measurements) stays on the node, in the worker's folder: the
    # driver's <out> may be on another machine. Only the result travels.
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=pool.workdir))
    try:
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="bisector-probe") as probes:
            # --report folders are written where the task runs: the driver's own disk with a local
            # Ray or a shared file system, the node's otherwise.
            result, work = job(entry, pool=pool, probes=probes, run_dir=run_dir, jobs=jobs)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        for done in (pool.workdir / "probes").iterdir():  # this model's finished probes
            shutil.rmtree(done, ignore_errors=True)
    return {
        "result": result.to_json(),
        "work": work.to_json() if work is not None else None,
        "node": socket.gethostname(),
        "pid": os.getpid(),
    }


def _connect(address: str | None) -> bool:
    """Join the cluster at `address` (or `auto`), or start a local Ray on this machine. Returns
    whether we started it (and so shut it down at the end). A Ray the caller started is reused."""

    import ray  # noqa: PLC0415 - ray is an extra: loaded only for --executor ray

    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            # A private single-machine cluster: no dashboard (it would open a port and pull in
            # its own dependencies), worker logs kept out of our output.
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot reach a Ray cluster at {address or 'this machine'}: {first}") from None
    return True


def _died(exc: BaseException) -> str:
    """What an exception from ray.get says about the task, in one line."""
    import ray.exceptions as rex  # noqa: PLC0415 - ray is an extra: loaded only for --executor ray

    lost = tuple(
        getattr(rex, n)
        for n in (
            "WorkerCrashedError",
            "NodeDiedError",
            "ObjectLostError",
            "OwnerDiedError",
            "OutOfMemoryError",
            "LocalRayletDiedError",
            "TaskCancelledError",
        )
        if hasattr(rex, n)
    )
    if isinstance(exc, lost):
        return (
            f"its Ray task died and was retried {TASK_RETRIES} time(s) ({type(exc).__name__}); run repair "
            "again to retry it"
        )
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"internal error: {type(cause).__name__}: {text[-1] if text else ''}"


def run_ray(
    todo: list[ModelEntry],
    job: Job,
    *,
    jobs: int | None,
    fresh: bool,
    address: str | None,
    on_start: Callable[[Callable[[], int]], None] | None = None,
) -> Iterable[tuple[ModelEntry, ModelResult, ModelWork | None]]:
    """Submit one task per model (`num_cpus` = --jobs, default 1: the probes it runs at once) and
    yield (entry, result, work) as each task finishes, in the order they finish."""
    require_ray()
    import ray  # noqa: PLC0415 - ray is an extra: loaded only for --executor ray

    cpus = max(1, jobs or 1)
    started_here = _connect(address)
    try:
        remote = ray.remote(_repair_task).options(
            num_cpus=cpus, max_retries=TASK_RETRIES, retry_exceptions=False, name="bisector-repair"
        )
        pending = {remote.remote(entry, job, cpus, fresh): entry for entry in todo}
        if on_start is not None:
            # Ray does not tell a driver which of its tasks have started; the cluster's CPUs
            # over each task's share is how many can be running, the rest wait in Ray's queue.
            def running() -> int:
                try:
                    slots = int(ray.cluster_resources().get("CPU", 0) // cpus)
                except Exception:  # noqa: BLE001 - progress must never fail a run
                    slots = 0
                return min(len(pending), max(slots, 1))

            on_start(running)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            entry = pending.pop(ref)
            try:
                data = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a lost task is this model's error, never the run's
                yield entry, ModelResult.failed(entry, _died(exc)), None
                continue
            work = ModelWork.from_json(data["work"]) if data.get("work") else None
            yield entry, ModelResult.from_json(data["result"]), work
    finally:
        if started_here:
            ray.shutdown()
            sweep_after_shutdown()


def sweep_after_shutdown(wait_s: float = 10.0) -> None:
    """Once Ray is shut down, its workers end without running exit handlers: remove their work
    folders as they go, waiting a little for the last ones (a driver that started Ray leaves none)."""

    tmp = Path(tempfile.gettempdir())
    deadline = time.monotonic() + wait_s
    while True:
        _sweep_dead_workers(tmp)
        if not any(tmp.glob(f"{WORKDIR_PREFIX}*")) or time.monotonic() > deadline:
            return
        time.sleep(0.2)
