"""Where `repair` spends its time: the wall per model and the phase timings each result carries.

    python bench/repair_time.py [--code DIR] [--only tagger,hook_per_call] [--jobs 2] [--json OUT]
                                [--corpus hook_per_call,lru_cache_mask,...]

Models: every model of tests/projects/* (each repaired alone, as `bisector repair` on a copy of its
project with a one-model manifest, the project's check command included), the corpus patterns
named by --corpus and the sample models named by --samples (`bisector fix FILE:Net ... --json` on a
copy, with the inputs, dims and stages of their truth). Each run gets a fresh run
directory and control cache, so nothing is reused from an earlier run.

--code DIR: the bisector checkout to run (default this one), e.g. an export of an older commit
(`git archive a15a205 | tar -x -C /tmp/before && cp -r /tmp/before/fixers /tmp/before/bisector/`)
to print the "before" table. A bisector without phase timings shows only the wall.

Columns, seconds: wall (the whole command, measured here), then the phase totals the result
carries (bisector/lab/timings.py). Phases run side by side in threads, so they may sum to more than the
wall. Also printed: the status, the culprits and the chosen fix, to compare verdicts between two
checkouts. `uptime` is printed first and last: the machine may be shared. Never fails on figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = ROOT / "tests" / "projects"
CORPUS = ROOT / "tests" / "corpus"
DEFAULT_CORPUS = "hook_per_call,lru_cache_mask,deque_no_maxlen,rope_cache_seq_len"
# Three stages each: clean ones (what a clean model costs) and ones with culprits in export.
DEFAULT_SAMPLES = "clean_cnn,clean_transformer,list_append,forward_hook,symbolic_leak"
# The columns, in the order a repair meets them (bisector/lab/timings.py's phase names).
PHASES = ("verdict", "trace", "search", "build", "measure", "equivalence", "confirm", "check")


def _load(path: Path) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(path.read_text())["tool"]["bisector"]


def project_models() -> list[tuple[str, Path, dict[str, Any], dict[str, Any]]]:
    """(name, project folder, the table's defaults, the model's entry) for every project model."""
    out = []
    for pyproject in sorted(PROJECTS.glob("*/pyproject.toml")):
        table = _load(pyproject)
        defaults = {k: v for k, v in table.items() if k != "models"}
        for entry in table.get("models", []):
            name = Path(entry["spec"].split(":")[0]).stem
            out.append((name, pyproject.parent, defaults, entry))
    return out


def _env(code: Path, cache: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PYTHONPATH": str(code),
        "BISECTOR_CACHE": str(cache),
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),  # the check command's `python`
    }


def run_project_model(code: Path, folder: Path, defaults: dict, entry: dict, jobs: int, timeout: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bisector-repair-time-"))
    try:
        project = tmp / folder.name
        shutil.copytree(folder, project, ignore=shutil.ignore_patterns(".bisector", "__pycache__", "*.onnx"))
        (project / "one.json").write_text(json.dumps({**defaults, "models": [entry]}))
        args = [sys.executable, "-m", "bisector", "repair", "--manifest", "one.json", "--json", "-q"]
        args += ["-j", str(jobs), "--models-at-once", "1", "--out", str(tmp / "out")]
        data, wall, error = _run(args, project, _env(code, tmp / "cache"), timeout)
        if data is None:
            return {"wall_s": wall, "error": error}
        row = (data.get("models") or [{}])[0]
        timings = dict(row.get("timings") or {})
        check = ((data.get("timings") or {}).get("totals") or {}).get("check")
        if check is not None:  # one model in the manifest: the summary's check command is its own
            timings["totals"] = {**(timings.get("totals") or {}), "check": check}
        return {
            "wall_s": wall,
            "status": row.get("status"),
            "culprits": sorted(f"{c['region'] or '<root>'}/{c['stage']}/{c['kind']}" for c in row.get("culprits", [])),
            "chosen": [k.get("fixer") for k in row.get("kept", [])],
            "check": row.get("check", ""),
            "timings": timings,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_fix(code: Path, truth: Any, jobs: int, timeout: float) -> dict:
    """`bisector fix` on a corpus pattern or a sample model (a copy of its file: `fix` writes
    nothing without --apply, but the copy keeps its run directory out of the repository)."""
    tmp = Path(tempfile.mkdtemp(prefix="bisector-repair-time-"))
    try:
        project = tmp / "project"
        shutil.copytree(Path(truth.path).parent, project, ignore=shutil.ignore_patterns("__pycache__", ".bisector"))
        (project / "pyproject.toml").write_text("[project]\nname = 'repair-time-copy'\n")
        model = project / Path(truth.path).name
        args = [sys.executable, "-m", "bisector", "fix", f"{model}:{truth.spec}", "--json", "-q"]
        if truth.exporter:
            args += ["--exporter", truth.exporter]
        for i in truth.inputs:
            args += ["-i", i]
        for d in truth.dims:
            args += ["-d", d]
        for s in truth.stages:
            args += ["-s", s]
        args += ["-j", str(jobs), "--run-dir", str(tmp / "run")]
        data, wall, error = _run(args, project, _env(code, tmp / "cache"), timeout)
        if data is None:
            return {"wall_s": wall, "error": error}
        kept = [f for f in data.get("fixes", []) if f.get("kept")]
        return {
            "wall_s": wall,
            "status": data.get("status") or ("fixed" if kept else "unfixed" if data.get("culprits") else "clean"),
            "culprits": sorted(f"{c['region'] or '<root>'}/{c['stage']}/{c['kind']}" for c in data.get("culprits", [])),
            "chosen": [kept[0]["fixer"]] if kept else [],
            "check": "",
            "timings": data.get("timings") or {},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[dict | None, float, str]:
    started = time.perf_counter()
    try:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, timeout, f"took more than {timeout:.0f} s"
    wall = time.perf_counter() - started
    try:
        return json.loads(done.stdout), wall, ""
    except ValueError:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, wall, f"exit {done.returncode}: {tail}"


def uptime() -> str:
    """The load average over 1, 5 and 15 minutes."""
    try:
        return "/".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--code", default=str(ROOT))
    ap.add_argument("--before", default="", help="another checkout, run on each model just before --code")
    ap.add_argument("--only", default="")
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--samples", default=DEFAULT_SAMPLES)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", default="", help="also write the rows to this file")
    args = ap.parse_args()
    codes = [("", Path(args.code).resolve())]
    if args.before:
        # Each model with both, one right after the other: on a shared machine both see the same load.
        codes.insert(0, ("before", Path(args.before).resolve()))
    only = set(filter(None, args.only.split(",")))
    print(f"code {', '.join(str(c) for _, c in codes)}; load average (1, 5, 15 min) {uptime()}", flush=True)
    print(f"{'model':<16} {'wall':>6} " + " ".join(f"{p:>7}" for p in PHASES) + "  status / culprits / chosen")
    rows = []
    todo: list[tuple[str, Any]] = [(n, ("project", f, d, e)) for n, f, d, e in project_models()]
    sys.path.insert(0, str(ROOT))
    from bisector.model.zoo import read_truths, zoo

    todo += [(n, ("fix", read_truths(CORPUS / f"{n}.py")[0])) for n in filter(None, args.corpus.split(","))]
    samples = {t.name: t for t in zoo(ROOT / "sample_models")}
    todo += [(n, ("fix", samples[n])) for n in filter(None, args.samples.split(","))]
    for name, how in todo:
        if only and name not in only:
            continue
        for side, code in codes:
            if how[0] == "project":
                r = run_project_model(code, how[1], how[2], how[3], args.jobs, args.timeout)
            else:
                r = run_fix(code, how[1], args.jobs, args.timeout)
            r["name"], r["side"], r["load"] = name, side, uptime()
            rows.append(r)
            totals = (r.get("timings") or {}).get("totals") or {}
            cells = " ".join(f"{totals[p]:>7.1f}" if p in totals else f"{'-':>7}" for p in PHASES)
            culprits = ",".join(r.get("culprits") or ()) or "-"
            chosen = ",".join(map(str, r.get("chosen") or ())) or "-"
            what = r.get("error") or f"{r['status']} {culprits} {chosen}"
            label = f"{name} ({side})" if side else name
            print(f"{label:<16} {r['wall_s']:>6.1f} {cells}  {what}  load {r['load']}", flush=True)
            if args.json:  # row by row: a run stopped halfway keeps what it measured
                Path(args.json).write_text(json.dumps(rows, indent=1))
    for side, _ in codes:
        walls = sorted(r["wall_s"] for r in rows if r["side"] == side)
        if walls:
            p90 = statistics.quantiles(walls, n=10, method="inclusive")[-1] if len(walls) > 1 else walls[0]
            print(
                f"\n{side or 'this'}: wall median {statistics.median(walls):.1f} s, p90 {p90:.1f} s, "
                f"max {walls[-1]:.1f} s"
            )
    print(f"load average (1, 5, 15 min) {uptime()}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
