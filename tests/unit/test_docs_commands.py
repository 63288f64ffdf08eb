"""Every command the README and docs/ show, checked against the code (issue 25): each fenced
`bisector ...` line with no placeholder (a file that does not exist, `[--x | --y]`, `...`) must
parse with today's options; those that start no probe run for real; those that probe are marked
`slow` (`make test-all`) and run with their ranges reduced (reduced()), or exactly as written with
BISECTOR_DOC_COMMANDS=1 (~15 min: they measure sample models as documented)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = ("", "sh", "bash", "console", "shell")
PROBING = {"measure", "find", "fix", "repair"}
# Commands that start no probe but need a run behind them, or read a project's manifest.
NEEDS_A_RUN = {"report", "merge"}
_PLACEHOLDER = re.compile(r"[\[\]|<>]|\.\.\.|…|^[A-Z_]+$")


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `bisector`) for every fenced bisector command line."""
    found = []
    for page in PAGES:
        fence = None
        pending = ""
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith("```"):
                fence = line[3:].strip() if fence is None else None
                continue
            if fence not in SHELL_FENCES:
                continue
            text = pending + line.strip().removeprefix("$ ")
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            if text.startswith("bisector "):
                found.append((f"{page.relative_to(ROOT)}:{n}", shlex.split(text, comments=True)[1:]))
    return found


def placeholder(argv: list[str]) -> str | None:
    """Why the command cannot run as written, or None."""
    for word in argv:
        if _PLACEHOLDER.search(word):
            return word
        path = word.split("=", 1)[-1].rsplit(":", 1)[0] if not word.startswith("-") else ""
        if path.endswith((".py", ".toml", ".json")) and not (ROOT / path).exists():
            return word
    return None


COMMANDS = [(where, argv) for where, argv in documented_commands() if placeholder(argv) is None]


def test_the_docs_show_commands_and_placeholders_are_told_apart() -> None:
    every = documented_commands()
    assert len(COMMANDS) >= 10 and len(every) > len(COMMANDS)
    assert placeholder(["find", "model.py:Net"]) == "model.py:Net"
    assert placeholder(["find", "sample_models/list_append.py:Net", "--input", "x=B,32"]) is None
    assert any(argv[:2] == ["find", "model.py:Net"] for _, argv in every)  # the five-minute path's


def test_a_renamed_option_fails_the_parse_check() -> None:
    with pytest.raises(pytest.fail.Exception, match="No such option"):
        test_each_documented_command_parses("here", ["clean", "--keep-control"])


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_each_documented_command_parses(where: str, argv: list[str]) -> None:
    """Options and values as today's CLI takes them: a renamed flag in a page fails here."""
    from typer.main import get_command

    from bisector.cli import app

    group = get_command(app)
    command = group.commands.get(argv[0])
    assert command is not None, f"{where}: no command {argv[0]!r}"
    try:
        command.make_context(argv[0], list(argv[1:]))
    except Exception as exc:  # typer vendors its own click: its exception classes are matched by name
        names = {c.__name__ for c in type(exc).__mro__}
        if "Exit" not in names:  # --help exits cleanly
            assert "UsageError" in names, exc
            pytest.fail(f"{where}: bisector {shlex.join(argv)}: {exc}")


CHEAP = [(w, a) for w, a in COMMANDS if a[0] not in PROBING | NEEDS_A_RUN]


@pytest.mark.parametrize("where,argv", CHEAP, ids=[w for w, _ in CHEAP])
def test_each_documented_command_that_starts_no_probe_runs(where: str, argv: list[str], tmp_path: Path) -> None:
    # In an empty folder, with a cache of its own: `clean --remove` must touch nothing of ours.
    env = {**os.environ, "BISECTOR_CACHE": str(tmp_path / "cache")}
    r = subprocess.run(
        [sys.executable, "-m", "bisector", *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, f"{where}: {r.stderr[-2000:]}"


# repair needs a project's manifest (the docs' commands assume the reader's): parsed above, not run.
PROBES = [(w, a) for w, a in COMMANDS if a[0] in PROBING - {"repair"}]
AS_WRITTEN = os.environ.get("BISECTOR_DOC_COMMANDS") == "1"


def reduced(argv: list[str]) -> list[str]:
    """The command with each ``--dim`` range cut to its first two values (``T=5:64`` -> ``T=5:6``):
    the same options, stages and code paths, fewer and smaller shapes to measure."""
    out = list(argv)
    for i, word in enumerate(out[:-1]):
        if word in ("--dim", "-d") and re.fullmatch(r"\w+=\d+:\d+", out[i + 1]):
            name, span = out[i + 1].split("=")
            lo, hi = (int(v) for v in span.split(":"))
            out[i + 1] = f"{name}={lo}:{min(hi, lo + 1)}"
    return out


def test_reduced_cuts_ranges_and_keeps_everything_else() -> None:
    argv = [
        "find",
        "m.py:Net",
        "--input",
        "x=B,T",
        "--dim",
        "B=1:4",
        "-d",
        "T=5:64",
        "--dim",
        "H=32",
        "--stage",
        "eager",
    ]
    assert reduced(argv) == [
        "find",
        "m.py:Net",
        "--input",
        "x=B,T",
        "--dim",
        "B=1:2",
        "-d",
        "T=5:6",
        "--dim",
        "H=32",
        "--stage",
        "eager",
    ]
    assert reduced(["find", "m.py:Net"]) == ["find", "m.py:Net"]


@pytest.mark.probe
@pytest.mark.slow
@pytest.mark.parametrize("where,argv", PROBES, ids=[w for w, _ in PROBES])
def test_each_documented_probing_command_runs(where: str, argv: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "BISECTOR_RUN_DIR": str(tmp_path / "run")}
    command = argv if AS_WRITTEN else reduced(argv)
    r = subprocess.run(
        [sys.executable, "-m", "bisector", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    # 0 or 1 (a finding): never a user error, an internal error or a hang.
    assert r.returncode in (0, 1), f"{where}: exit {r.returncode}: {r.stderr[-2000:]}"
