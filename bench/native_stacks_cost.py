"""The cost of the traced probe's native stacks (bisector/probe/native.py): one traced probe per
(model, stage), with BISECTOR_NATIVE_STACKS=0 and =1, on the tiny GPT-2 and the CNN samples.

    python bench/native_stacks_cost.py [--stages eager,export] [--models gpt2-tiny,cnn] [--stacks 0,1]

Prints, per probe: wall time, the measured loop, memray's own share (start, stop, reading and
resolving the stacks), and the heap growth per call either way (memray's own memory must not show
as the span's growth). Never fails: the figures are the result.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bisector.lab.twins import OWNER_FRAMES, owners_profile  # noqa: E402
from bisector.model.schedule import ScheduleProfile, build_schedule  # noqa: E402
from bisector.model.spec import build_input_plan, library_imports, parse_model_spec  # noqa: E402
from bisector.probe.pool import ProbePool  # noqa: E402
from bisector.probe.types import ProbeOk, ProbeOptions, ProbeRequest  # noqa: E402

MODELS = {
    "gpt2-tiny": ("hf_gpt2.py:Net", ["ids=B,T:int64:0:1000"], ["B=1:4", "T=5:64"]),
    "cnn": ("clean_cnn.py:Net", ["x=B,3,H,W"], ["B=1:8", "H=8:64", "W=8:64"]),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", default="eager,export")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--stacks", default="0,1", help="BISECTOR_NATIVE_STACKS values to run")
    args = ap.parse_args()
    print(f"{'model':<10} {'stage':<7} {'stacks':<6} {'wall s':>7} {'loop s':>7} {'memray s':>9} {'heap B/call':>12}")
    for flag in args.stacks.split(","):
        os.environ["BISECTOR_NATIVE_STACKS"] = flag
        for name in args.models.split(","):
            target, inputs, dims = MODELS[name]
            spec = parse_model_spec(str(ROOT / "sample_models" / target))
            plan = build_input_plan(inputs, dims, spec)
            with (
                tempfile.TemporaryDirectory() as tmp,
                ProbePool(Path(tmp), timeout_s=600, preload=tuple(library_imports(spec))) as pool,
            ):
                for stage in args.stages.split(","):
                    schedule = build_schedule(plan.dims, owners_profile(ScheduleProfile(), stage))
                    options = ProbeOptions(owners=OWNER_FRAMES[stage])
                    req = ProbeRequest(spec, plan, stage, schedule, options, label=f"{name} {stage}")
                    t0 = time.perf_counter()
                    result = pool.run(req)
                    wall = time.perf_counter() - t0
                    if not isinstance(result, ProbeOk):
                        print(f"{name:<10} {stage:<7} {flag:<6} {result.describe()}")
                        continue
                    rep = (result.curve.meta.get("owners") or {}).get("repeat") or {}
                    cost = (rep.get("native_stacks") or {}).get("cost_s", 0.0)
                    loop = result.curve.meta.get("loop_s", 0.0)
                    heap = rep.get("heap", 0)
                    print(f"{name:<10} {stage:<7} {flag:<6} {wall:>7.1f} {loop:>7.1f} {cost:>9.1f} {heap:>12}")


if __name__ == "__main__":
    main()
