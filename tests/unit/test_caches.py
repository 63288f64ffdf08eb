"""The control cache keeps the first control measured for a key (caches.write_atomic)."""

from __future__ import annotations

import json
from pathlib import Path

from bisector.store.caches import write_atomic


def test_the_first_control_written_for_a_key_is_the_one_kept(tmp_path: Path) -> None:
    # Two runs that missed at once measure two different curves; a run re-read from its cache must
    # judge against the control it was first judged against.
    path = tmp_path / "controls" / "eager-0123.json"
    write_atomic(path, {"rss": 1}, replace=False)
    write_atomic(path, {"rss": 2}, replace=False)
    assert json.loads(path.read_text()) == {"rss": 1}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_a_run_directorys_results_are_replaced(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_atomic(path, {"rss": 1})
    write_atomic(path, {"rss": 2})
    assert json.loads(path.read_text()) == {"rss": 2}
