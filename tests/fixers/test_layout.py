"""Where the fixers live: the repository's fixers/ folder, installed as bisector.fixers. What
keys bisector's result cache and what counts as bisector's own memory must follow them there."""

from __future__ import annotations

from pathlib import Path

import bisector.fixers
from bisector.fixers import FOLDER

from bisector.judge.owners import installed_own
from bisector.store import caches


def test_the_fixers_are_bisector_fixers_from_the_repositorys_fixers_folder() -> None:
    assert bisector.fixers.__name__ == "bisector.fixers"
    assert (FOLDER / "base.py").is_file() and FOLDER == Path(bisector.fixers.__file__).parent
    assert str(FOLDER) in installed_own()


def test_the_code_version_covers_the_fixers(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(caches, "_CODE_VERSION", None)
    ours = caches.code_version()
    other = tmp_path / "fixers"
    other.mkdir()
    (other / "base.py").write_text("# another fixer base\n")
    monkeypatch.setattr(caches, "_CODE_VERSION", None)
    monkeypatch.setattr(bisector.fixers, "FOLDER", other)
    assert caches.code_version() != ours
