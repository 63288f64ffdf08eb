"""Fix every fixable sample model, then measure each kept fix again on its own with other seeds.

    python bench/fix_zoo.py [--only list_append,dynamic_cnn] [--seeds 2]

Prints, per sample: the culprits, every kept fix with its before -> after figure, and for each
kept fix the whole model measured again with the fix applied, seeds 1..N (other shapes and
inputs than the run that kept it): its verdict and growth, and whether it still meets the bar the
fix was kept on (clean, or growth down by 90%). Never fails; the figures are the result.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bisector import api  # noqa: E402
from bisector.find import Finder  # noqa: E402
from bisector.measure import measure  # noqa: E402
from bisector.find import outcome_of  # noqa: E402
from bisector.repair import KEEP_DROP, Repairer, growth, shadow_copy  # noqa: E402
from bisector.units import format_bytes  # noqa: E402
from bisector.zoo import zoo  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    kept_total = held_total = 0
    for truth in zoo(ROOT / "sample_models"):
        if (only and truth.name not in only) or not truth.culprits or truth.gpu_only:
            continue
        tmp = Path(tempfile.mkdtemp(prefix="bisector-fixbench-"))
        p = api.prepare(truth.target, truth.inputs, truth.dims, stages=list(truth.stages), exporter=truth.exporter)
        started = time.perf_counter()
        finder = Finder(p.model, p.plan, p.options, run_dir=tmp / "run")
        try:
            found = finder.find()
            report = Repairer(finder, found).run()
            print(f"{truth.name}: {len(found.culprits)} culprits, {len(report.evaluations)} candidates tried, "
                  f"{len(report.kept)} kept, {time.perf_counter() - started:.0f} s (fixable: {truth.fixable})")
            for c in found.culprits:
                kept = [e for e in report.for_culprit(c) if e.kept]
                if not kept:
                    print(f"  {c.region or '<root>'} ({c.stage} {c.kind}): no kept fix")
                for e in kept:
                    kept_total += 1
                    extra = f", holds {format_bytes(e.upfront_bytes, True)} from the start" if e.upfront_bytes and abs(e.upfront_bytes) > 5e6 else ""
                    print(f"  {c.region or '<root>'} ({c.stage}): {e.fixer}: {e.summary[:90]}")
                    print(f"      {e.reason}{extra}")
                    model = shadow_copy(p.model, e.edits, tmp / "again") if e.edits else p.model
                    held = True
                    for seed in range(1, args.seeds + 1):
                        options = replace(p.options, stages=(c.stage,), seed=p.options.seed + seed, probe=p.options.probe.with_overrides(e.probe))
                        r = measure(model, p.plan, options, pool=finder.pool).stages[c.stage]
                        v = r.verdict
                        figure = "-" if v is None else (
                            f"{v.objects_per_call or 0:+.0f} objects/call, {format_bytes(v.growth_bytes_per_call, True)}/call, "
                            f"{format_bytes(v.growth_bytes_per_new_shape, True)}/new shape")
                        before, unit = growth(e.before, c.kind)
                        after = 0.0 if r.kind == "clean" or v is None else growth(outcome_of(v, r.curve, r.control).figures, c.kind)[0]
                        ok = r.kind == "clean" or (v is not None and after <= (1 - KEEP_DROP) * before)
                        print(f"      again, seed {seed}: {r.kind}  {figure}  ({'holds' if ok else 'DOES NOT HOLD'}: {after:.3g} vs {before:.3g} {unit})")
                        held = held and ok
                    held_total += held
        finally:
            finder.close()
            shutil.rmtree(tmp, ignore_errors=True)
        sys.stdout.flush()
    print(f"\n{held_total}/{kept_total} kept fixes still flat (clean, or growth down by {KEEP_DROP:.0%}) with every other seed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
