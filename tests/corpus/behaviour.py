"""Runs corpus patterns' behaviour checks (each truth's `behaviour`) on model files, in a child
process: each file is imported fresh (patched or not), its model built and called `calls` times
with inputs of varying sizes inside the declared ranges, then the check runs.

Not a pattern itself (no BISECTOR_TRUTH): the bench and the tests share it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

CALLS = 12

_SCRIPT = r"""
import importlib.util, json, sys, traceback
import torch

def shape_of(text, i, ranges):
    out = []
    for part in text.split(","):
        if part.isdigit():
            out.append(int(part))
        else:
            lo, hi = ranges[part]
            out.append(lo + (i * 7) % (hi - lo + 1))
    return tuple(out)

def check(n, path, spec, inputs, dims, calls, code):
    torch.manual_seed(0)
    loaded = importlib.util.spec_from_file_location(f"corpus_model_{n}", path)
    module = importlib.util.module_from_spec(loaded)
    sys.modules[loaded.name] = module
    loaded.loader.exec_module(module)
    net = getattr(module, spec)()
    ranges = {}
    for d in dims:
        name, _, rng = d.partition("=")
        lo, _, hi = rng.partition(":")
        ranges[name] = (int(lo), int(hi or lo))
    made, outputs = [], []
    for i in range(calls):
        args = []
        for text in inputs:
            shape_text, *dtype = text.partition("=")[2].split(":")
            shape = shape_of(shape_text, i, ranges)
            if dtype and dtype[0].startswith("int"):
                args.append(torch.randint(int(float(dtype[1])), int(float(dtype[2])), shape))
            else:
                args.append(torch.randn(shape))
        made.append(args[0] if len(args) == 1 else args)
        outputs.append(net(*args))
    scope = {"net": net, "torch": torch, "inputs": made, "outputs": outputs, "calls": calls, "module": module}
    exec(code, scope)

results = []
for n, job in enumerate(json.loads(sys.stdin.read())):
    try:
        check(n, *job)
        results.append("")
    except BaseException as exc:
        results.append(f"{type(exc).__name__}: {exc}".strip() or "failed")
print(json.dumps(results))
"""


def run_behaviours(targets: list[tuple[str | Path, Any]], calls: int = CALLS, timeout: float = 300.0) -> list[str]:
    """Every (path, truth)'s check, in one child (importing torch once is what costs): "" for each
    that passed, else why it failed, in order."""
    jobs = [[str(p), t.spec, list(t.inputs), list(t.dims), calls, t.extra["behaviour"]] for p, t in targets]
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT], input=json.dumps(jobs), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return [f"the behaviour checks took more than {timeout:.0f} s"] * len(jobs)
    try:
        return list(json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return [tail] * len(jobs)


def run_behaviour(path: str | Path, truth: Any, calls: int = CALLS, timeout: float = 120.0) -> tuple[bool, str]:
    """(passed, why not) for one file."""
    (why,) = run_behaviours([(path, truth)], calls, timeout)
    return not why, why
