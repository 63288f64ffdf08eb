"""Proving a patch on the user's project: the patched files compile, and the project's own check
command ([tool.bisector] check) passes with them, in a shadow copy (the user's files are never
touched). A patch whose check fails is not offered.

The check runs contained as a probe is (probe/containment.py: its own cgroup, or a subreaper
supervisor), with a timeout (CHECK_TIMEOUT_S unless the caller gives one) and the probes' default
memory cap; when the command ends or is stopped, everything it started is killed, so
`sleep 300 & echo started` neither keeps bisector waiting nor outlives it."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from bisector.probe import containment
from bisector.probe.pool import default_mem_cap

CHECK_TIMEOUT_S = 600.0


def shadow_project(root: Path, dest: Path) -> Path:
    """A copy of the project to run the check in (the user's files are never touched)."""
    shutil.copytree(
        root,
        dest,
        ignore=shutil.ignore_patterns(".bisector", ".git", "__pycache__", ".venv", "*.onnx", ".pytest_cache"),
    )
    return dest


def compile_error(patches: Iterable[Any]) -> str:
    """The first patched Python file that does not compile, and why; "" when all do."""
    for p in patches:
        if p.path.endswith(".py"):
            try:
                compile(p.after_bytes, p.path, "exec")  # as Python reads the file: its coding line, its BOM
            except SyntaxError as exc:
                return f"{p.rel} does not compile: {exc.msg} (line {exc.lineno})"
    return ""


def prove(root: Path, check: str | None, patches: list[Any], timeout: float = CHECK_TIMEOUT_S) -> tuple[bool, str]:
    """Whether a patch may be offered, and the check state the report shows."""
    return Prover(root, check, timeout)(patches)


@dataclass(frozen=True)
class Prover:
    """`prove` for one project, many times: repair proves every model's patches together, then each
    model's alone when they fail; the check without patches (the reference) runs once for them all."""

    root: Path
    check: str | None
    timeout: float = CHECK_TIMEOUT_S
    what: str = "the patch"  # as the "not proven" state names what was proven

    @cached_property
    def reference(self) -> tuple[bool, str]:
        """The check on the project as it is: a check that fails without the patch proves nothing."""
        assert self.check
        return run_check(self.root, self.check, [], self.timeout)

    def __call__(self, patches: list[Any]) -> tuple[bool, str]:
        """Whether the patches may be offered, and the check state the report shows."""
        broken = compile_error(patches)
        if broken:
            return False, f"failed: {broken}"
        if not self.check:
            return True, "not run against your script"
        reference, ref_why = self.reference
        if not reference:
            return True, f"not proven: `{self.check}` fails without {self.what} too ({ref_why})"
        ok, why = run_check(self.root, self.check, patches, self.timeout)
        return ok, "passed" if ok else f"failed: {why}"


def run_check(root: Path, command: str, patches: Iterable[Any], timeout: float = CHECK_TIMEOUT_S) -> tuple[bool, str]:
    """The project's check command in a shadow copy with the patches written: (passed, why).
    Patched Python files are compiled first."""
    patches = list(patches)
    broken = compile_error(patches)
    if broken:
        return False, broken
    with tempfile.TemporaryDirectory(prefix="bisector-check-") as tmp:
        shadow = shadow_project(root, Path(tmp) / "project")
        for p in patches:
            target = shadow / p.rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(p.after_bytes)  # the bytes --apply would write
        env = dict(os.environ)
        # `python` in the command is the interpreter bisector runs in (it has the project's deps)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        r = containment.run(
            ["/bin/sh", "-c", command], timeout_s=timeout, mem_cap=default_mem_cap(), env=env, cwd=shadow
        )
    if r.stopped == "timeout":
        return False, f"`{command}` did not finish in {timeout:.0f} s (stopped, with all it started)"
    if r.stopped == "memory-cap":
        return False, f"`{command}` went over the memory cap ({r.peak_bytes >> 20} MB; stopped, with all it started)"
    if r.returncode == 0:
        return True, ""
    output = (r.stderr or r.stdout).decode("utf-8", "replace")
    tail = [ln for ln in output.strip().splitlines() if ln.strip()]
    how = f"was killed by signal {-r.returncode}" if (r.returncode or 0) < 0 else f"exited {r.returncode}"
    return False, f"`{command}` {how}: {tail[-1] if tail else ''}"
