"""The corpus from the wild (tests/corpus/): for every pattern, does `find` name it exactly, and
does `fix` keep a fix that preserves the pattern's feature?

    python bench/corpus.py [--only deque_no_maxlen,lru_cache_mask] [--jobs 2]

Each pattern is copied into a project of its own and run as a user runs it:
`bisector fix FILE:Net -i ... -d ... -s eager --apply --json` there. Then:
- find exact: the culprits are the truth's (region, stage, kind), no more, no fewer;
- fix kept: a fix was chosen and written (status `fixed`);
- behaviour: the truth's behaviour check passes on the patched file (tests/corpus/behaviour.py);
- wall: the whole `fix` run.
A pattern counts as "fixed, feature kept" only when all of the last three hold. A pattern that fix
reports as not fixable automatically (its JSON's `not_fixable`: weights grown in forward, which
no bound keeps) is shown as `no-auto` with the reason; it is not a kept fix, so the bar's figure
still counts it as a miss over all patterns, and a second line gives the kept fixes over the
patterns fix did not declare unfixable, and how many misses were silent. Prints a table and the
totals; never fails (the figures are the result).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bisector.model.zoo import Truth, zoo  # noqa: E402
from tests.corpus.behaviour import run_behaviour  # noqa: E402


def _culprits(data: dict) -> set[tuple[str, str, str]]:
    return {(c["region"], c["stage"], c["kind"]) for c in data.get("culprits", [])}


def run_one(truth: Truth, jobs: int, timeout: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bisector-corpus-"))
    try:
        project = tmp / "project"
        project.mkdir()
        (project / "pyproject.toml").write_text("[project]\nname = 'corpus-copy'\n")
        model = project / Path(truth.path).name
        shutil.copy(truth.path, model)
        args = [sys.executable, "-m", "bisector", "fix", f"{model}:{truth.spec}", "--apply", "--json"]
        for i in truth.inputs:
            args += ["-i", i]
        for d in truth.dims:
            args += ["-d", d]
        for s in truth.stages:
            args += ["-s", s]
        args += [str(f) for f in truth.extra.get("flags", ())]  # as a user runs it (the truth says why)
        args += ["-j", str(jobs), "--run-dir", str(tmp / "run")]
        env = {**os.environ, "BISECTOR_CACHE": os.environ.get("BISECTOR_CACHE", str(tmp / "cache"))}
        started = time.perf_counter()
        try:
            done = subprocess.run(args, capture_output=True, text=True, cwd=project, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"name": truth.name, "error": f"fix took more than {timeout:.0f} s", "wall_s": timeout}
        wall = time.perf_counter() - started
        try:
            data = json.loads(done.stdout)
        except ValueError:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {"name": truth.name, "error": f"exit {done.returncode}: {tail}", "wall_s": wall}
        want = {(c["region"], c["stage"], c["kind"]) for c in truth.culprits}
        got = _culprits(data)
        # fix exits 0 when every culprit got a kept fix (and --apply wrote it), 1 when one has none.
        written = model.read_bytes() != Path(truth.path).read_bytes()
        not_fixable = list(data.get("not_fixable") or [])
        if done.returncode == 0 and written:
            status = "fixed"
        elif done.returncode == 0 and not got:
            status = "clean"  # find saw no growth the model owns: nothing to fix
        elif not_fixable and done.returncode in (0, 1):
            status = "no-auto"  # fix said why no bound keeps the behaviour, and what to change
        else:
            status = "unfixed" if done.returncode in (0, 1) else "error"
        chosen = [str(p.get("summary", "")) for p in data.get("patches", [])]
        if status == "no-auto":
            chosen = [f"not fixable automatically: {nf['reason']}" for nf in not_fixable]
        elif not chosen and data.get("patch_notes"):
            chosen = [str(data["patch_notes"][0])]
        behaviour, why = run_behaviour(model, truth) if status == "fixed" else (None, "")
        return {
            "name": truth.name,
            "pattern": truth.extra.get("pattern", ""),
            "exact": got == want,
            "found": sorted(got),
            "status": status,
            "chosen": chosen,
            "behaviour": behaviour,
            "why": why,
            "wall_s": wall,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", default="", help="also write the rows to this file")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    truths = [t for t in zoo(ROOT / "tests" / "corpus") if not only or t.name in only]
    rows = []
    print(f"{'pattern':<32} {'find':<6} {'status':<9} {'feature':<8} {'wall':>6}  chosen / why")
    for t in truths:
        r = run_one(t, args.jobs, args.timeout)
        rows.append(r)
        if "error" in r:
            print(f"{r['name']:<32} {'error':<6} {'-':<9} {'-':<8} {r['wall_s']:5.0f}s  {r['error']}")
        else:
            feature = "-" if r["behaviour"] is None else ("kept" if r["behaviour"] else "LOST")
            note = ", ".join(r["chosen"]) or ""
            if r["behaviour"] is False:
                note += f" ({r['why']})"
            if not r["exact"]:
                note += f" found {r['found']}"
            print(
                f"{r['name']:<32} {'exact' if r['exact'] else 'WRONG':<6} {r['status']:<9} {feature:<8} "
                f"{r['wall_s']:5.0f}s  {note}"
            )
        sys.stdout.flush()
    n = len(rows)
    exact = sum(1 for r in rows if r.get("exact"))
    kept = sum(1 for r in rows if r.get("status") == "fixed" and r.get("behaviour"))
    declared = sum(1 for r in rows if r.get("status") == "no-auto")
    wall = sum(r["wall_s"] for r in rows)
    print(f"\nfind exact: {exact}/{n} ({exact / max(1, n):.0%})")
    print(f"behaviour-preserving fix kept: {kept}/{n} ({kept / max(1, n):.0%})")
    fixable = n - declared
    print(
        f"  of the {fixable} not declared unfixable: {kept}/{fixable} ({kept / max(1, fixable):.0%}); "
        f"declared not fixable automatically (with reason and suggestion): {declared}; "
        f"silent misses: {n - kept - declared}"
    )
    print(f"wall: {wall:.0f} s in all, {wall / max(1, n):.0f} s per pattern")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
