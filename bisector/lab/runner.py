"""Runs probe requests on a pool, at most ``jobs`` at once, through the caches; reports progress."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from bisector.probe.pool import ProbePool
from bisector.probe.types import ProbeKind, ProbeOk, ProbeRequest, ProbeResult
from bisector.store.caches import ControlCache, ResultCache

log = logging.getLogger("bisector.probes")


# A crashed probe's output is kept for the user to read, not in full: a flood (100 MB of stderr
# once) would fill the run directory. Its head says how it started, its tail how it ended.
LOG_HEAD = LOG_TAIL = 256 * 1024
LOGS = ("stdout.txt", "stderr.txt")


def _copy_capped(src: str, dst: str) -> str:
    """shutil.copy2, except that a probe's stdout or stderr over LOG_HEAD + LOG_TAIL bytes keeps
    only its head and tail, with a line saying how much was left out."""
    size = os.path.getsize(src)
    if Path(src).name not in LOGS or size <= LOG_HEAD + LOG_TAIL:
        return shutil.copy2(src, dst)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(fin.read(LOG_HEAD))
        fout.write(f"\n[... bisector left out {size - LOG_HEAD - LOG_TAIL} bytes here ...]\n".encode())
        fin.seek(size - LOG_TAIL)
        fout.write(fin.read(LOG_TAIL))
    return dst


class Events:
    """Progress callbacks; the CLI renders them, the library stays silent."""

    def probe_queued(self, label: str) -> None: ...

    def probe_started(self, label: str) -> None: ...

    def probe_finished(self, label: str, result: ProbeResult, cached: bool = False) -> None: ...

    def probe_dropped(self, label: str) -> None: ...

    def stage_done(self, stage: str, kind: str, summary: str) -> None: ...


class Runner:
    """Runs probe requests on a pool, at most ``jobs`` at once, caching control runs (and, with a
    ResultCache, the model's own runs)."""

    def __init__(
        self,
        pool: ProbePool,
        jobs: int,
        cache: ControlCache,
        events: Events,
        results: ResultCache | None = None,
        executor: ThreadPoolExecutor | None = None,
        limits: Mapping[str, Any] | None = None,
    ) -> None:
        self.pool = pool
        # This model's timeout, memory cap and fresh, sent with every probe: a shared pool's own
        # are another model's (or the pytest plugin's 600 s).
        self.limits = dict(limits or {})
        self.cache = cache
        self.results = results
        self.events = events
        self.reused = 0  # every probe taken from a cache: this model's earlier runs' and the controls'
        self.reused_controls = 0  # of those, the controls from the control cache
        # Runners that share an executor share its limit on probes running at once.
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="bisector-probe")
        self.probes = 0
        self._lock = threading.Lock()
        # Where the folders of failed or crashed probes are kept (find's run directory); without
        # one they go with the pool's temporary folder, and errors do not point to them.
        self.keep_failed_in: Path | None = None
        # Makes the shared export file a probe loads (lab/exports.py), given its path; set by the lab.
        self.prepare_export: Callable[[str], str] | None = None

    def _keep(self, result: ProbeResult) -> ProbeResult:
        src = getattr(result, "probe_dir", "")
        if not src:
            return result
        kept = ""
        if self.keep_failed_in is not None and Path(src).is_dir():
            target = self.keep_failed_in / f"{Path(src).name}-{os.getpid()}-{int(time.time() * 1000) % 10**9}"
            try:
                shutil.copytree(src, target, copy_function=_copy_capped)
                kept = str(target)
            except OSError:
                pass
        return replace(result, probe_dir=kept)

    def submit(self, request: ProbeRequest, extra_key: str = "", prepare: Callable[[], str] | None = None) -> Future:
        """Run (or reuse) a probe. extra_key: more that decides the result, e.g. the code and
        weights hashes of the regions probed. prepare: called when the probe is run (not when it is
        reused), in its turn, for the shared export file it loads ("": none, the probe exports)."""
        cached = (
            self.cache.get(request)
            if request.control
            else (self.results.get(request, extra_key) if self.results else None)
        )
        if cached is not None:
            fut: Future = Future()
            fut.set_result(cached)
            with self._lock:
                self.reused += 1  # a control from the global cache too: a stage's count includes it
                self.reused_controls += 1 if request.control else 0
            log.debug("probe %s: reused from %s", request.label, "the control cache" if request.control else "the run")
            event(self.events, "probe_queued", request.label)  # planned and done: the bar adds up
            self.events.probe_finished(request.label, cached, cached=True)
            return fut
        event(self.events, "probe_queued", request.label)
        if prepare is None and request.exported and request.kind != ProbeKind.EXPORT_FILE and self.prepare_export:
            prepare = functools.partial(self.prepare_export, request.exported)
        future = self.executor.submit(self._run, request, extra_key, prepare)
        # A probe cancelled before it started (a speculative trace not needed) is no longer planned.
        future.add_done_callback(
            lambda f: event(self.events, "probe_dropped", request.label) if f.cancelled() else None
        )
        return future

    def result(self, request: ProbeRequest, queued: Callable[[], None] | None = None) -> ProbeResult:
        """Run (or reuse) a probe and wait for it. queued: called once the probe is in the queue, so
        that work it starts (a fix's confirmation beside its outputs' probe) queues behind it."""
        future = self.submit(request)
        if queued is not None:
            queued()
        return future.result()

    def run_now(self, request: ProbeRequest) -> ProbeResult:
        """Run a probe in this thread (inside another probe's turn: a shared export it needs)."""
        event(self.events, "probe_queued", request.label)
        return self._run(request)

    def _run(self, request: ProbeRequest, extra_key: str = "", prepare: Callable[[], str] | None = None) -> ProbeResult:
        ran = request.with_(exported=prepare()) if prepare is not None else request
        self.events.probe_started(request.label)
        result = self._keep(self.pool.run(ran, **self.limits))
        with self._lock:
            self.probes += 1
        if request.control:
            self.cache.put(request, result)
        elif self.results is not None and request.kind != ProbeKind.EXPORT_FILE:  # its file goes with the pool
            self.results.put(request, result, extra_key)
        self.events.probe_finished(request.label, result)
        _log(request.label, result)
        return result

    def close(self) -> None:
        if self._own_executor:
            self.executor.shutdown(wait=True, cancel_futures=True)


def event(events: Any, name: str, *args: Any) -> None:
    """Call an event a renderer may not define (callers' own Events from before it existed)."""
    method = getattr(events, name, None)
    if method is not None:
        method(*args)


def _log(label: str, result: ProbeResult) -> None:
    tail = getattr(result, "tail", "") or getattr(result, "traceback", "")
    if isinstance(result, ProbeOk):
        # -v: each probe's outcome, one line.
        log.info("probe %s: ok in %.1f s", label, getattr(result, "wall_s", 0.0))
    else:
        # The full stderr of a crashed, hung or failed probe: -v shows it, the report keeps one line.
        log.info("%s: %s\n%s", label, result.describe() if hasattr(result, "describe") else result, tail)
