"""Is `bisector find --json` the same before and after a change? Capture, then compare.

    python bench/json_parity.py capture OUT [--code DIR] [--only clean_cnn,list_append]
    python bench/json_parity.py compare BEFORE AFTER

capture: runs `bisector find SPEC --json` (seed 0, the truth's inputs, dims and stages) on every
sample model this machine can run, with the bisector found in DIR (default: this checkout), from
a neutral folder with a fresh run directory, and keeps stdout and the exit code per model.

compare: the two captures must have the same exit codes, the same set of key paths, and the same
strings (with the numbers and paths they quote masked), booleans and nulls. Numbers are compared
by type only: byte and object figures are measurements and move between runs; timings move
always. The lists of what a measurement happened to see (types whose count moved, allocation
sites) are left out, and fields the versioned contract added are listed apart. Key order is
ignored. Prints each difference and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Leaves whose text is a measurement or a path of this run, not part of the contract.
VOLATILE = ("run_dir", "wall", "seconds", "elapsed", "path", "bisector_version", "versions", "stderr")
# Subtrees that list what a measurement happened to see: the types whose count moved, the
# allocation sites of the owners' trace. Their keys depend on the run (noise), not on the code.
MEASURED = (".type_growth.", ".grown_types.", ".sites.")
# Fields a later schema added (the versioned contract, #13): reported apart, not as differences.
ADDED = ("schema_version", "report_kind", "bisector_version", ".versions.")


def capture(out: Path, code: Path, only: set[str]) -> int:
    sys.path.insert(0, str(ROOT))
    from bisector.model.zoo import zoo

    out.mkdir(parents=True, exist_ok=True)
    for truth in zoo(ROOT / "sample_models"):
        if (only and truth.name not in only) or truth.gpu_only:
            continue
        args = [sys.executable, "-m", "bisector", "find", str(Path(truth.path).resolve()) + ":" + truth.spec, "--json"]
        for i in truth.inputs:
            args += ["--input", i]
        for d in truth.dims:
            args += ["--dim", d]
        for s in truth.stages:
            args += ["--stage", s]
        if truth.exporter:
            args += ["--exporter", truth.exporter]
        with tempfile.TemporaryDirectory(prefix="json-parity-") as cwd:
            args += ["--run-dir", str(Path(cwd) / "run"), "--seed", "0"]
            env = dict(os.environ, PYTHONPATH=str(code))
            started = time.monotonic()
            done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
            seconds = time.monotonic() - started
        name = truth.name.replace(":", "__")
        (out / f"{name}.json").write_text(done.stdout)
        (out / f"{name}.rc").write_text(str(done.returncode))
        print(f"{truth.name:<24} exit {done.returncode}  {seconds:6.1f} s", flush=True)
    return 0


def leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key in sorted(node):
            yield from leaves(node[key], f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from leaves(item, f"{path}[{i}]")
    else:
        yield path, node


def normal(value: Any, path: str) -> Any:
    if any(word in path for word in VOLATILE):
        return "<volatile>"
    if isinstance(value, str):
        # Text that quotes a figure or a file (a verdict's reasons): its words must match.
        value = re.sub(r"\S*/\S*", "<path>", value)
        return re.sub(r"[-+]?\d+(\.\d+)?", "#", value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return "<number>"
    return value


def compare(before: Path, after: Path) -> int:
    bad = 0
    for rc in sorted(before.glob("*.rc")):
        name = rc.stem
        other = after / rc.name
        if not other.exists():
            print(f"{name}: missing after")
            bad += 1
            continue
        if rc.read_text() != other.read_text():
            print(f"{name}: exit {rc.read_text()} before, {other.read_text()} after")
            bad += 1
        a = dict(leaves(json.loads((before / f"{name}.json").read_text() or "null")))
        b = dict(leaves(json.loads((after / f"{name}.json").read_text() or "null")))
        added = sorted(k for k in set(b) - set(a) if any(w in k for w in ADDED))
        a = {k: v for k, v in a.items() if not any(w in k for w in MEASURED)}
        b = {k: v for k, v in b.items() if not any(w in k for w in MEASURED) and k not in added}
        if added:
            print(f"{name}: added by the schema: {', '.join(added)}")
        for key in sorted(set(a) | set(b)):
            if key not in b:
                print(f"{name}: {key} only before")
                bad += 1
            elif key not in a:
                print(f"{name}: {key} only after")
                bad += 1
            elif normal(a[key], key) != normal(b[key], key):
                print(f"{name}: {key}: {a[key]!r} before, {b[key]!r} after")
                bad += 1
        print(f"{name}: {len(a)} leaves compared")
    print(f"{bad} differences")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("out")
    c.add_argument("--code", default=str(ROOT))
    c.add_argument("--only", default="")
    k = sub.add_parser("compare")
    k.add_argument("before")
    k.add_argument("after")
    args = ap.parse_args()
    if args.cmd == "capture":
        return capture(Path(args.out), Path(args.code).resolve(), set(filter(None, args.only.split(","))))
    return compare(Path(args.before), Path(args.after))


if __name__ == "__main__":
    sys.exit(main())
