"""The second redesign's size rule (#23): no module over 500 lines and no function over 60 lines
in bisector/ and fixers/, so that a module is one concept and a function one step. Tests, sample
models and bench scripts are exempt."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def sources() -> list[Path]:
    return sorted([*(ROOT / "bisector").rglob("*.py"), *(ROOT / "fixers").rglob("*.py")])


def long_functions(path: Path, root: Path = ROOT, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.relative_to(root)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_module_is_over_500_lines() -> None:
    files = sources()
    assert len(files) > 50
    long = {
        str(f.relative_to(ROOT)): n
        for f in files
        if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_60_lines() -> None:
    long = [line for f in sources() for line in long_functions(f)]
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def short():\n" + "    x = 1\n" * 59 + "\n\nclass C:\n    def long(self):\n" + "        x = 1\n" * 60
    )
    assert long_functions(probe, root=tmp_path) == ["probe.py:64 long (61 lines)"]
