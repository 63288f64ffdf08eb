"""The probes' progress on stderr, as the lab reports it (events: probe queued, started,
finished; stage done)."""

from __future__ import annotations

import threading
from typing import Any

from bisector.cli.render import err_console


class ProgressDisplay:
    """Progress on stderr. On a terminal: a bar of probes done out of those planned so far, with
    the stages running and the time elapsed. Elsewhere (pipes, CI logs): one line per finished stage."""

    def __init__(self, bar: bool, lines: bool = True) -> None:
        self.bar_enabled = bar
        self.lines = lines and not bar
        self.planned = 0
        self.done = 0
        self.active: list[str] = []
        self._lock = threading.Lock()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressDisplay:
        if self.bar_enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("probes"),
                TimeElapsedColumn(),
                console=err_console(),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("starting", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def _update(self) -> None:
        if self._bar is not None:
            stages = sorted({label.split()[0] for label in self.active}) or ["…"]
            self._bar.update(
                self._task,
                description=", ".join(stages),
                completed=self.done,
                total=max(self.planned, self.done) or None,
            )

    def probe_queued(self, label: str) -> None:
        with self._lock:
            self.planned += 1
            self._update()

    def probe_dropped(self, label: str) -> None:
        with self._lock:
            self.planned -= 1
            self._update()

    def probe_started(self, label: str) -> None:
        with self._lock:
            self.active.append(label)
            self._update()

    def probe_finished(self, label: str, result: Any, cached: bool = False) -> None:
        with self._lock:
            if label in self.active:
                self.active.remove(label)
            self.done += 1
            self._update()

    def stage_done(self, stage: str, kind: str, summary: str) -> None:
        if kind == "failed":
            return  # the model could not run this stage: the error line after the report says so
        if self.lines:
            err_console().print(f"{stage}: {summary}", markup=False, highlight=False)
        elif self._bar is not None:
            self._bar.console.print(f"{stage}: {summary}", markup=False, highlight=False)
