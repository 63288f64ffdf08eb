"""Wall time per stage on the sample zoo, for this checkout and, side by side, another one.

    python bench/stage_times.py [--stages eager,inference] [--only list_append,clean_cnn]
                                [--before DIR] [--runs 1]
                                [--model FILE:NAME --input x=B,3 --dim B=1:4]   (instead of the zoo)

--before DIR: a checkout of bisector to compare with (e.g. `git worktree add /tmp/old <commit>`);
each sample and stage is measured with both, one after the other, so both see the same load on
the machine. Every run measures afresh (no cached control). Prints seconds; never fails on them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ONE_RUN = """
import json, sys, time
from bisector import api
t = time.perf_counter()
r = api.measure(sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), stages=[sys.argv[4]],
                exporter=json.loads(sys.argv[5]), cache=False)
import bisector
print(json.dumps({"wall": time.perf_counter() - t, "kind": r.stages[sys.argv[4]].kind, "code": bisector.__file__}))
"""


def run(
    code: Path, target: str, inputs: list[str], dims: list[str], stage: str, exporter: str | None
) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(code))
    # Not from this checkout's folder: `python -c` puts the working folder first on sys.path, and
    # the other checkout's bisector must win.
    with tempfile.TemporaryDirectory(prefix="stage-times-") as cwd:
        out = subprocess.run(
            [sys.executable, "-c", ONE_RUN, target, json.dumps(inputs), json.dumps(dims), stage, json.dumps(exporter)],
            env=env,
            capture_output=True,
            text=True,
            cwd=cwd,
        )
    if out.returncode != 0:
        return float("nan"), "error: " + (out.stderr.strip().splitlines() or ["?"])[-1]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["code"].startswith(str(code)), f"measured with {data['code']}, not {code}"
    return data["wall"], data["kind"]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from bisector.model.zoo import zoo

    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", default="eager,inference")
    ap.add_argument("--only", default="")
    ap.add_argument("--before", default="")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--model", default="")
    ap.add_argument("--input", action="append", default=[])
    ap.add_argument("--dim", action="append", default=[])
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    stages = args.stages.split(",")
    codes = [("after", ROOT)] + ([("before", Path(args.before).resolve())] if args.before else [])
    print(
        f"{'sample':<22} {'stage':<10} " + " ".join(f"{name + ' s':>10} {name + ' verdict':<16}" for name, _ in codes)
    )
    totals: dict[str, list[float]] = {name: [] for name, _ in codes}
    if args.model:
        from types import SimpleNamespace

        samples = [
            SimpleNamespace(
                name=Path(args.model.split(":")[0]).stem,
                target=str(Path(args.model.rpartition(":")[0]).resolve()) + ":" + args.model.rpartition(":")[2],
                inputs=args.input,
                dims=args.dim,
                stages={s: "?" for s in stages},
                exporter=None,
                gpu_only=False,
            )
        ]
    else:
        samples = zoo(ROOT / "sample_models")
    for truth in samples:
        if (only and truth.name not in only) or truth.gpu_only:
            continue
        for stage in stages:
            if stage not in truth.stages:
                continue
            cells = []
            for name, code in codes:
                walls, kind = [], ""
                for _ in range(args.runs):
                    wall, kind = run(code, truth.target, list(truth.inputs), list(truth.dims), stage, truth.exporter)
                    walls.append(wall)
                w = statistics.median(walls)
                totals[name].append(w)
                cells.append(f"{w:>10.1f} {kind:<16}")
            print(f"{truth.name:<22} {stage:<10} " + " ".join(cells), flush=True)
    print("total: " + "  ".join(f"{name} {sum(v):.1f} s" for name, v in totals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
