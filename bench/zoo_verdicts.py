"""Measure every sample model N times and print its verdict per stage against its ground truth.

    python bench/zoo_verdicts.py [--runs 5] [--only list_append,native_leak] [--fresh]

Prints one row per sample and stage: expected verdict, verdicts seen, growth figures, time.
A pass/fail summary closes it; it never fails on time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bisector import api  # noqa: E402
from bisector.common.units import format_bytes  # noqa: E402
from bisector.model.zoo import zoo  # noqa: E402


def has_cuda() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:  # noqa: BLE001
        return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default="")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--seed-offset", type=int, default=0, help="run k uses seed offset+k")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    cuda = has_cuda()
    total = ok = 0
    for truth in zoo(ROOT / "sample_models"):
        if only and truth.name not in only:
            continue
        if truth.gpu_only and not cuda:
            print(f"{truth.name:<18} skipped: needs a CUDA device")
            continue
        seen: dict[str, Counter] = {s: Counter() for s in truth.stages}
        figures: dict[str, list[str]] = {s: [] for s in truth.stages}
        walls = []
        for run in range(args.runs):
            started = time.perf_counter()
            report = api.measure(
                truth.target,
                truth.inputs,
                truth.dims,
                stages=list(truth.stages),
                exporter=truth.exporter,
                device=truth.device,
                seed=args.seed_offset + run,
                fresh=args.fresh,
            )
            walls.append(time.perf_counter() - started)
            for stage in truth.stages:
                r = report.stages[stage]
                seen[stage][r.kind] += 1
                v = r.verdict
                if v is not None:
                    figures[stage].append(
                        f"{format_bytes(v.growth_bytes_per_call, True)}/call "
                        f"{format_bytes(v.growth_bytes_per_new_shape, True)}/shape"
                        f" {v.objects_per_call if v.objects_per_call is not None else 0:+.0f}obj"
                    )
                elif r.failure is not None:
                    figures[stage].append(str(getattr(r.failure, "message", r.failure))[:80])
        for stage, expected in truth.stages.items():
            good = seen[stage][expected]
            total += args.runs
            ok += good
            mark = "ok " if good == args.runs else "BAD"
            print(
                f"{mark} {truth.name:<18} {stage:<10} expect {expected:<13} got {dict(seen[stage])}  "
                f"[{figures[stage][0] if figures[stage] else ''}]  {sum(walls) / len(walls):.1f} s/run"
            )
        sys.stdout.flush()
    print(f"\n{ok}/{total} stage verdicts as stated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
