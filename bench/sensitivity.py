"""How small a native leak bisector sees, per stage, and how often it blames a clean model.

    python bench/sensitivity.py [--seeds 3] [--sizes 1,4,16,64,256] [--stages eager,export,inference]
                                [--clean-seeds 2] [--skip-clean] [--locate-seeds 5] [--floor 512B]
                                [--clean-models clean_cnn,hf_gpt2]

--floor: the detection floor target every measurement is asked to reach (as `--floor`; default:
the tool's own). The issue-27 check: `--sizes 0.5 --stages eager,inference --seeds 5
--locate-seeds 0 --clean-seeds 5 --floor 512B`.

1. A small model (bench/models/injected.py) mallocs N KB per call, per export, or per ONNX Runtime
   run, never freed. Each size is measured over several seeds: detection rate (verdict `leak`) and
   the detection floor each verdict stated.
2. The clean zoo (every sample whose truth says `clean` for a stage, transformers models included)
   over several seeds: the false-leak rate (a clean stage called `leak`), and how often the
   toolchain's own growth was reported apart (`toolchain-leak`).
3. Wall time per stage for the clean injected model.
4. `find` at the floor targets (4 KB/call in eager, 16 KB/export in export) over seeds: does it
   name the leaking region (`body.2`) and nothing else? (An injected runtime leak in inference is
   in every session, not in a region of the model, so it is not searched.)
Prints figures; never fails on them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bisector import api  # noqa: E402
from bisector.common.units import format_bytes  # noqa: E402
from bisector.model.zoo import zoo  # noqa: E402

MODEL = str(ROOT / "bench" / "models" / "injected.py") + ":Net"


FLOOR: list[str] = []  # --floor, passed to every measurement


MISSES: list[str] = []  # why an injected leak was not called one: printed after part 1


def measure(stage: str, leak_kb: float, seed: int) -> tuple[str, float | None, float, float | None]:
    started = time.perf_counter()
    report = api.measure(
        MODEL,
        ["x=B,32"],
        ["B=1:8"],
        stages=[stage],
        seed=seed,
        init_kwargs=f'{{"leak_bytes": {int(leak_kb * 1024)}, "stage": "{stage}"}}',
        cache=False,
        floor=tuple(FLOOR),
    )
    wall = time.perf_counter() - started
    r = report.stages[stage]
    v = r.verdict
    if leak_kb and r.kind != "leak":
        MISSES.append(f"  {stage} {leak_kb:g} KB seed {seed}: {r.kind}; " + "; ".join(v.reasons if v else ()))
    return r.kind, (v.floor_bytes_per_call if v else None), wall, (v.growth_bytes_per_call if v else None)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sizes", default="1,4,16,64,256")
    ap.add_argument("--stages", default="eager,export,inference")
    ap.add_argument("--clean-seeds", type=int, default=2)
    ap.add_argument("--first-clean-seed", type=int, default=0, help="part 2's seeds start here (to split a run)")
    ap.add_argument("--skip-clean", action="store_true")
    ap.add_argument("--locate-seeds", type=int, default=5)
    ap.add_argument("--floor", default="", help="the floor target for every stage, e.g. 512B (default: the tool's)")
    ap.add_argument("--clean-models", default="", help="only these zoo samples in part 2 (comma-separated names)")
    args = ap.parse_args()
    FLOOR[:] = [args.floor] if args.floor else []
    stages = args.stages.split(",")
    sizes = [float(s) for s in args.sizes.split(",") if s]

    print("1. injected native leaks: detection rate over seeds, floor stated (median), growth measured")
    print(f"{'stage':<10} {'leak':>8} {'detected':>9} {'floor':>10} {'measured':>12} {'wall s':>7}")
    walls: dict[str, list[float]] = {s: [] for s in stages}
    for stage in stages if sizes else []:
        for seed in range(args.seeds):  # the clean model: wall time and floor
            kind, floor, wall, _ = measure(stage, 0, seed)
            walls[stage].append(wall)
        for kb in sizes:
            seen, floors, growth, times = Counter(), [], [], []
            for seed in range(args.seeds):
                kind, floor, wall, g = measure(stage, kb, seed)
                seen[kind] += 1
                times.append(wall)
                if floor is not None:
                    floors.append(floor)
                if g is not None:
                    growth.append(g)
            rate = f"{seen['leak']}/{args.seeds}"
            fl = format_bytes(statistics.median(floors)) if floors else "-"
            gr = format_bytes(statistics.median(growth)) if growth else "-"
            print(
                f"{stage:<10} {format_bytes(kb * 1024):>8} {rate:>9} {fl:>10} {gr:>12} "
                f"{statistics.median(times):>7.1f}",
                flush=True,
            )

    for miss in MISSES:
        print(miss)
    print("\n3. wall time per stage, clean injected model (median over seeds)")
    for stage, ws in walls.items():
        if ws:
            print(f"{stage:<10} {statistics.median(ws):6.1f} s")

    print("\n4. find at the floor targets: the leaking region named, alone")
    for stage, kb in (("eager", 4), ("export", 16)):
        if stage not in stages:
            continue
        named = 0
        for seed in range(args.locate_seeds):
            report = api.find(
                MODEL,
                ["x=B,32"],
                ["B=1:8"],
                stages=[stage],
                seed=seed,
                cache=False,
                init_kwargs=f'{{"leak_bytes": {kb * 1024}, "stage": "{stage}"}}',
                run_dir=tempfile.mkdtemp(prefix="sens-"),
            )
            culprits = sorted(c.region for c in report.culprits)
            named += culprits == ["body.2"]
            floor = (
                report.measure.stages[stage].verdict.floor_bytes_per_call
                if report.measure.stages[stage].verdict
                else None
            )
            print(
                f"  {stage:<8} {kb} KB seed {seed}: culprits {culprits}, floor {format_bytes(floor) if floor else '-'}",
                flush=True,
            )
        print(f"{stage:<10} {kb} KB: named alone in {named}/{args.locate_seeds}")

    if args.skip_clean:
        return 0
    print("\n2. clean zoo: false-leak rate (a stated-clean stage called leak) and toolchain growth shown apart")
    false = total = toolchain = 0
    only = {m for m in args.clean_models.split(",") if m}
    stage_walls: dict[str, list[float]] = {}
    for truth in zoo(ROOT / "sample_models"):
        clean_stages = [s for s, k in truth.stages.items() if k == "clean"]
        if not clean_stages or truth.gpu_only or (only and truth.name not in only):
            continue
        for seed in range(args.first_clean_seed, args.first_clean_seed + args.clean_seeds):
            for s in clean_stages:  # one stage a measurement: its wall time is the stage's
                started = time.perf_counter()
                report = api.measure(
                    truth.target,
                    truth.inputs,
                    truth.dims,
                    stages=[s],
                    exporter=truth.exporter,
                    seed=seed,
                    floor=tuple(FLOOR),
                )
                wall = time.perf_counter() - started
                stage_walls.setdefault(s, []).append(wall)
                r = report.stages[s]
                v = r.verdict
                kind = r.kind
                total += 1
                false += kind == "leak"
                toolchain += kind == "toolchain-leak"
                floor = format_bytes(v.floor_bytes_per_call) if v and v.floor_bytes_per_call else "-"
                growth = format_bytes(v.growth_bytes_per_call, signed=True) if v else "-"
                print(
                    f"  {truth.name:<22} {s:<10} seed {seed}: {kind:<15} floor {floor:>9}  growth {growth:>10}"
                    f"  {r.attempts} tries  {wall:6.1f} s",
                    flush=True,
                )
                if kind == "leak" and v is not None:  # a false leak: why it was called one
                    for why in v.reasons:
                        print(f"      {why}", flush=True)
    print(f"false leaks: {false}/{total}   toolchain growth reported apart: {toolchain}/{total}")
    for s, ws in stage_walls.items():
        print(f"  wall per {s:<10} median {statistics.median(ws):6.1f} s  max {max(ws):6.1f} s  ({len(ws)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
