"""Inputs inferred when the user gives none: `bisector find model.py:Net` with no --input.

Sources, in order: a ``bisector_inputs`` hook and ``[tool.bisector]`` inputs (read before this
is called, by api.prepare), then, in a child process that builds the model
(bisector.probe.infer_child): an ``example_inputs``/``dummy_input`` on the model, a transformers
PreTrainedModel's main input and config, the first layer the input reaches; the forward
signature names them. Every guess is checked with forwards at small sizes before it is taken.

The answer is flags the user can copy (``Inferred.as_flags()``); when nothing fits, a UserError
lists what was tried and shows the --input grammar. The parent never imports torch: a crashing
or hanging child is an error line, never a hang.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bisector.common.errors import UserError
from bisector.model.spec import INPUTS_HOOK, ModelSpec, default_range, parse_dim
from bisector.probe import containment
from bisector.probe.pool import default_mem_cap

GRAMMAR = (
    "add --input NAME=DIMS[:DTYPE[:LOW:HIGH]] for each forward argument, e.g. --input x=B,3,H,W or "
    f"--input ids=B,T:int64:0:1000, or define {INPUTS_HOOK}(dims, rng) in the model file"
)
# Importing torch (and transformers) and building the model dominate; the forwards are small.
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Inferred:
    """Inputs found for a model: --input values, the --dim values the defaults do not already
    give, and where they came from."""

    inputs: tuple[str, ...]  # e.g. ("x=B,3,H,W",)
    dims: tuple[str, ...]  # e.g. ("H=8:100",); symbols at their default range are left out
    source: str  # e.g. "stem: Conv2d(3, 16)"

    def as_flags(self) -> str:
        return " ".join([*(f"--input {i}" for i in self.inputs), *(f"--dim {d}" for d in self.dims)])

    def describe(self) -> str:
        """The line the CLI prints: flags to copy, and the evidence."""
        return f"inputs inferred: {self.as_flags()} (from {self.source})"

    def to_json(self) -> dict[str, Any]:
        return {"inputs": list(self.inputs), "dims": list(self.dims), "source": self.source}


def infer(
    model: ModelSpec, dims: Iterable[str] = (), timeout_s: float = DEFAULT_TIMEOUT_S, mem_cap: int | None = None
) -> Inferred:
    """Infer the inputs of `model`, keeping the user's --dim ranges (`dims`) as given. Meant for
    when neither --input, a bisector_inputs hook nor [tool.bisector] gave any; raises UserError
    (exit 2) with what was tried when nothing fits. The child runs under the probes' limits
    (mem_cap: the probes' default cap when None) and in a box of its own (containment.py)."""
    given = dict(parse_dim(d) for d in dims)
    answer = _run_child(model, given, timeout_s, mem_cap)
    tried = [f"{INPUTS_HOOK} hook: none in {Path(model.path).name}", "[tool.bisector] inputs: none"]
    tried += answer.get("tried", [])
    if answer.get("error"):
        message = f"no inputs given, and inferring them failed: {answer['error']}; {GRAMMAR}"
        raise UserError(message, detail=answer.get("detail", ""))
    if not answer.get("inputs"):
        raise UserError(f"no inputs given, and none could be inferred (tried: {'; '.join(tried)}); {GRAMMAR}")
    ranges = {s: (int(r[0]), int(r[1])) for s, r in answer.get("dims", {}).items()}
    extra = tuple(
        f"{s}={lo}" if lo == hi else f"{s}={lo}:{hi}"
        for s, (lo, hi) in ranges.items()
        if s not in given and (lo, hi) != default_range(s)
    )
    return Inferred(inputs=tuple(answer["inputs"]), dims=extra, source=str(answer.get("source", "")))


def _run_child(
    model: ModelSpec, given: dict[str, tuple[int, int]], timeout_s: float, mem_cap: int | None = None
) -> dict[str, Any]:
    """The child's JSON answer; a crash, a timeout or the memory cap becomes {"error": ...}."""
    env = dict(os.environ)
    # The child imports bisector from wherever this process did (an editable checkout or site-packages).
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["BISECTOR_PARENT_PID"] = str(os.getpid())
    request = json.dumps({"model": model.to_json(), "dims": {s: list(r) for s, r in given.items()}})
    if mem_cap is None:
        mem_cap = default_mem_cap()
    # Contained: a daemon the model starts at import (holding the child's pipes) is killed when
    # the child ends, so it neither keeps bisector waiting nor outlives it (Ctrl-C kills the box).
    r = containment.run(
        [sys.executable, "-m", "bisector.probe.infer_child", "-"],
        stdin=request.encode(),
        timeout_s=timeout_s,
        mem_cap=mem_cap,
        env=env,
        stdout_head=4 << 20,  # stdout carries the answer alone (the model's prints go to stderr)
    )
    if r.stopped == "timeout":
        return {"error": f"the child that builds the model took more than {timeout_s:.0f} s"}
    if r.stopped == "memory-cap":
        return {"error": f"the child that builds the model went over the memory cap ({r.peak_bytes >> 20} MB)"}
    try:
        answer = json.loads(r.stdout.decode("utf-8", "replace"))
        if isinstance(answer, dict):
            return answer
    except ValueError:
        pass
    code = r.returncode or 0
    how = f"signal {-code}" if code < 0 else f"exit {code}"
    lines = [ln for ln in r.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    tail = f": {lines[-1].strip()[:300]}" if lines else ""
    return {"error": f"the child that builds the model crashed ({how}){tail}", "detail": "\n".join(lines[-12:])}
