"""Where a run keeps the original model's outputs for its fix candidates' equivalence probes
(probe/reference_outputs.py), and the order those probes start in: the first of a reference
runs alone and stores it, the others start once it has (they read it instead of exporting the
original again), side by side."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class References:
    """One run's references: a file per original configuration and stage's shapes."""

    def __init__(self, run: Path | None) -> None:
        self.folder = run / "references" if run is not None else None
        self._lock = threading.Lock()
        self._first: dict[str, threading.Lock] = {}
        self._tried: set[str] = set()

    def path(self, original: dict[str, Any], source: str) -> str:
        """The file for an original probe request (its JSON, without what names the candidate) and
        the hash of its source: "" where the run keeps nothing (measure)."""
        if self.folder is None:
            return ""
        key = hashlib.sha256(json.dumps({"request": original, "source": source}, sort_keys=True).encode())
        return str(self.folder / f"{key.hexdigest()[:20]}.npz")

    def first(self, path: str, run: Callable[[], T]) -> T:
        """run(), after the first probe of this reference has ended (it runs holding the turn)."""
        if not path:
            return run()
        with self._lock:
            turn = self._first.setdefault(path, threading.Lock())
        with turn:
            if path not in self._tried:
                self._tried.add(path)
                return run()
        return run()
