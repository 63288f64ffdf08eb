"""Probes and wall time of `find` against an exhaustive scan, side by side, per sample model.

    python bench/localize.py [--only list_append,hf_gpt2:LeakyNet] [--runs 1] [--skip-scan]

For each sample with culprits: `find` from an empty run directory and an empty control cache
(everything it needs is measured), then the scan a person would write without it: record the
regions' inputs once, then probe **every module alone, in every stage find measured, each in a
fresh interpreter** with the same schedules (what `--fresh` does). Prints probes, wall time, the
ratio, whether find named exactly the stated culprits, and the budget for single-leak models,
2*log2(modules) + 6 model probes (a stage's root, and each region set the search probed; the
input capture and the control runs, which a warm cache skips, are shown separately).
Never fails on time; the figures are the result.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bisector import api  # noqa: E402
from bisector.find.localise import find  # noqa: E402
from bisector.model.capture import capture_schedule, distinct_dims  # noqa: E402
from bisector.model.schedule import build_schedule  # noqa: E402
from bisector.model.zoo import zoo  # noqa: E402
from bisector.probe.pool import ProbePool  # noqa: E402
from bisector.probe.types import ProbeKind, ProbeOk, ProbeRequest  # noqa: E402


def scan(prepared, stages: list[str], workdir: Path) -> tuple[int, float]:
    """Every module alone, every stage, each probe in a fresh interpreter."""
    started = time.perf_counter()
    schedules = {
        s: build_schedule(prepared.plan.dims, prepared.options.profiles[s], prepared.options.seed) for s in stages
    }
    capture = workdir / "capture"
    probes = 0
    with ProbePool(workdir / "pool", fresh=True, timeout_s=prepared.options.timeout_s) as pool:
        rec = pool.run(
            ProbeRequest(
                prepared.model,
                prepared.plan,
                None,
                capture_schedule(distinct_dims(schedules.values()), prepared.options.seed),
                prepared.options.probe,
                capture=str(capture),
                kind=ProbeKind.CAPTURE,
            )
        )
        probes += 1
        assert isinstance(rec, ProbeOk), rec
        regions = [r["path"] for r in rec.data["tree"] if r.get("called", True)]
        for region in regions:
            for stage in stages:
                for control in (False, True) if region == "" else (False,):
                    pool.run(
                        ProbeRequest(
                            prepared.model,
                            prepared.plan,
                            stage,
                            schedules[stage],
                            prepared.options.probe,
                            regions=(region,),
                            capture=str(capture),
                            control=control,
                        )
                    )
                    probes += 1
    return probes, time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument(
        "--runs", type=int, default=1, help="find runs per sample (seeds 0..runs-1), to check culprits every time"
    )
    ap.add_argument("--skip-scan", action="store_true")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    for truth in zoo(ROOT / "sample_models"):
        if (only and truth.name not in only) or not truth.culprits or truth.gpu_only:
            continue
        stages = list(truth.stages)
        exact = 0
        finds = []
        for run in range(args.runs):
            tmp = Path(tempfile.mkdtemp(prefix="bisector-bench-"))
            os.environ["BISECTOR_CACHE"] = str(tmp / "cache")  # nothing reused from earlier runs
            prepared = api.prepare(
                truth.target, truth.inputs, truth.dims, stages=stages, exporter=truth.exporter, seed=run
            )
            started = time.perf_counter()
            report = find(prepared.model, prepared.plan, prepared.options, run_dir=tmp / "run")
            wall = time.perf_counter() - started
            got = sorted((c.region, c.stage, c.kind) for c in report.culprits)
            want = sorted((c["region"], c["stage"], c["kind"]) for c in truth.culprits)
            exact += got == want
            # model probes: the root of each stage, and every region set the search tested
            model_probes = len(report.measure.stages) + sum(max(0, len(s.tested) - 1) for s in report.searches.values())
            finds.append((report.probes, model_probes, wall, len(report.tree)))
            if got != want:
                print(f"  {truth.name} seed {run}: found {got}, stated {want}")
            if run == 0 and not args.skip_scan:
                scan_probes, scan_wall = scan(prepared, stages, tmp / "scan")
            shutil.rmtree(tmp, ignore_errors=True)
        probes, model_probes, wall, modules = finds[0]
        budget = 2 * math.log2(modules) + 6
        single = len(truth.culprits) == 1
        row = (
            f"{truth.name:<20} {modules:>3} modules  find {model_probes:>3} model probes"
            + (
                f" (budget {budget:4.1f}{' ok' if model_probes <= budget else ' OVER'})"
                if single
                else " (2 culprits)      "
            )
            + f" +{probes - model_probes} capture/control, {wall:6.1f} s"
        )
        if not args.skip_scan:
            row += f"   scan {scan_probes:>3} probes {scan_wall:7.1f} s   {scan_wall / wall:5.1f}x faster"
        row += f"   culprits exact {exact}/{args.runs}"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
