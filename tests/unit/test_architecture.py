"""The fixers' contract, which import-linter cannot check in an editable install (setuptools maps
bisector.fixers to the repository's fixers/ folder through an import hook, which grimp does not
follow): a fixer imports nothing from bisector but bisector.fixers and the two vocabularies
(bisector.model.choices: stages and exporters; bisector.model.kinds: verdict kinds, with bisector.common.strenum under
it), so fixers stay plugins over a small base and never reach into the engine. The other contracts are in pyproject's
[tool.importlinter] and run in `make test`."""

from __future__ import annotations

import ast
from pathlib import Path

FIXERS = Path(__file__).resolve().parents[2] / "fixers"
VOCABULARIES = {"bisector.model.choices", "bisector.model.kinds"}


def bisector_imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return [m for m in out if m == "bisector" or m.startswith("bisector.")]


def test_fixers_import_nothing_from_bisector_but_the_fixers() -> None:
    files = sorted(FIXERS.glob("*.py"))
    assert files
    bad = {
        f.name: m
        for f in files
        for m in bisector_imports(f)
        if not m.startswith("bisector.fixers") and m not in VOCABULARIES
    }
    assert not bad, f"fixers reach into bisector: {bad}"


def test_the_check_sees_a_forbidden_import(tmp_path) -> None:
    f = tmp_path / "x.py"
    f.write_text(
        "from bisector.fixers.base import Fixer\nfrom bisector.lab.stage import Lab\nimport bisector.judge.verdict\n"
    )
    assert bisector_imports(f) == ["bisector.fixers.base", "bisector.lab.stage", "bisector.judge.verdict"]
