"""Fix every fixable sample model, then measure each kept fix again on its own with other seeds.

    python bench/fix_zoo.py [--only list_append,dynamic_cnn] [--seeds 2]

Prints, per sample: the culprits, every kept fix with its before -> after figure, and for each
kept fix the whole model measured again with the fix applied, seeds 1..N (other shapes and
inputs than the run that kept it): its verdict and growth, and whether it still meets the bar the
fix was kept on (clean, or growth down by 90%). Then the patch: the sample is fixed in a copy
(its own project folder), the combined diff of the best fixes is applied there with `git apply`,
and the patched model is measured again (source edits from the patched files, export and runtime
settings as probe options): its verdict per culprit stage. Never fails; the figures are the result.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bisector import api  # noqa: E402
from bisector.common.units import format_bytes  # noqa: E402
from bisector.fix.candidates import merge_probe  # noqa: E402
from bisector.fix.growth import KEEP_DROP, growth  # noqa: E402
from bisector.fix.sources import shadow_copy  # noqa: E402
from bisector.judge.choice import best_fixes  # noqa: E402
from bisector.lab.measure import measure  # noqa: E402
from bisector.lab.results import outcome_of  # noqa: E402
from bisector.model.spec import ModelSpec  # noqa: E402
from bisector.model.zoo import zoo  # noqa: E402
from bisector.patching.diff import combined_diff  # noqa: E402
from bisector.patching.from_report import patches_for  # noqa: E402
from bisector.pipeline import run as pipeline  # noqa: E402
from bisector.probe.pool import ProbePool  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    kept_total = held_total = 0
    patched_total = [0, 0]
    for truth in zoo(ROOT / "sample_models"):
        if (only and truth.name not in only) or not truth.culprits or truth.gpu_only:
            continue
        tmp = Path(tempfile.mkdtemp(prefix="bisector-fixbench-"))
        project = tmp / "project"  # the sample in a project of its own, where its patch is applied
        project.mkdir()
        (project / "pyproject.toml").write_text("[project]\nname = 'copy'\n")
        shutil.copy(truth.path, project / Path(truth.path).name)
        target = f"{project / Path(truth.path).name}:{truth.spec}"
        p = api.prepare(
            target,
            truth.inputs,
            truth.dims,
            stages=list(truth.stages),
            exporter=truth.exporter,
            run_dir=str(tmp / "run"),
        )
        started = time.perf_counter()
        pool = ProbePool(fresh=p.options.fresh, timeout_s=p.options.timeout_s, mem_cap=p.options.mem_cap)
        try:
            # The one find -> fix path, without patches: the bench patches a copy itself below.
            outcome = pipeline.fix(p, pipeline.FixRequest(patch=False), pool=pool)
            found, report = outcome.found, outcome.report
            print(
                f"{truth.name}: {len(found.culprits)} culprits, {len(report.evaluations)} candidates tried, "
                f"{len(report.kept)} kept, {time.perf_counter() - started:.0f} s (fixable: {truth.fixable})"
            )
            for c in found.culprits:
                kept = [e for e in report.for_culprit(c) if e.kept]
                if not kept:
                    print(f"  {c.region or '<root>'} ({c.stage} {c.kind}): no kept fix")
                for e in kept:
                    kept_total += 1
                    extra = (
                        f", holds {format_bytes(e.upfront_bytes, True)} from the start"
                        if e.upfront_bytes and abs(e.upfront_bytes) > 5e6
                        else ""
                    )
                    print(f"  {c.region or '<root>'} ({c.stage}): {e.fixer}: {e.summary}")
                    print(f"      {e.reason}{extra}")
                    model = shadow_copy(p.model, e.edits, tmp / "again") if e.edits else p.model
                    held = True
                    for seed in range(1, args.seeds + 1):
                        options = replace(
                            p.options,
                            stages=(c.stage,),
                            seed=p.options.seed + seed,
                            probe=p.options.probe.with_overrides(e.probe),
                        )
                        r = measure(model, p.plan, options, pool=pool).stages[c.stage]
                        v = r.verdict
                        figure = (
                            "-"
                            if v is None
                            else (
                                f"{v.objects_per_call or 0:+.0f} objects/call, "
                                f"{format_bytes(v.growth_bytes_per_call, True)}/call, "
                                f"{format_bytes(v.growth_bytes_per_new_shape, True)}/new shape"
                            )
                        )
                        before, unit = growth(e.before, c.kind)
                        after = (
                            0.0
                            if r.kind == "clean" or v is None
                            else growth(outcome_of(v, r.curve, r.control).figures, c.kind)[0]
                        )
                        ok = r.kind == "clean" or (v is not None and after <= (1 - KEEP_DROP) * before)
                        print(
                            f"      again, seed {seed}: {r.kind}  {figure}  "
                            f"({'holds' if ok else 'DOES NOT HOLD'}: {after:.3g} vs {before:.3g} {unit})"
                        )
                        held = held and ok
                    held_total += held
            patched_total[0] += check_patch(report, project, p, pool)
        finally:
            pool.close()
            shutil.rmtree(tmp, ignore_errors=True)
        sys.stdout.flush()
    print(
        f"\n{held_total}/{kept_total} kept fixes still flat (clean, or growth down by {KEEP_DROP:.0%}) with "
        "every other seed"
    )
    print(
        f"{patched_total[0]} samples patched with git apply and measured clean (or down {KEEP_DROP:.0%}) in "
        "every culprit stage"
    )
    return 0


def check_patch(report, project: Path, p, pool) -> int:
    """Apply the combined diff in the copy with git apply, measure the patched model again; 1 when
    every culprit stage is clean or down by KEEP_DROP."""
    chosen = best_fixes(report)
    if not chosen:
        return 0
    patches, _ = patches_for(report, project)
    diff = combined_diff(patches)
    (project / "fix.diff").write_text(diff)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    done = subprocess.run(["git", "apply", "fix.diff"], cwd=project, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"  patch: git apply FAILED: {done.stderr.strip()[:200]}")
        return 0
    probe: dict = {}
    for ev in chosen:
        probe = merge_probe(probe, ev.probe)
    patched = ModelSpec(p.model.path, p.model.name, p.model.init_kwargs)  # the same file, now patched
    stages = tuple(dict.fromkeys(c.stage for c in report.find.culprits))
    options = replace(p.options, stages=stages, probe=p.options.probe.with_overrides(probe))
    again = measure(patched, p.plan, options, pool=pool)
    ok = True
    parts = []
    for c in report.find.culprits:
        r = again.stages[c.stage]
        before, unit = growth(c.figures, c.kind)
        after = (
            0.0
            if r.kind == "clean" or r.verdict is None
            else growth(outcome_of(r.verdict, r.curve, r.control).figures, c.kind)[0]
        )
        held = r.kind == "clean" or (r.verdict is not None and after <= (1 - KEEP_DROP) * before)
        ok = ok and held
        parts.append(f"{c.stage} {r.kind} ({after:.3g} vs {before:.3g} {unit})")
    files = ", ".join(x.rel for x in patches if x.changed)
    print(
        f"  patch: {files} applied with git apply; measured again: {'; '.join(parts)}{'' if ok else '  DOES NOT HOLD'}"
    )
    return int(ok)


if __name__ == "__main__":
    sys.exit(main())
