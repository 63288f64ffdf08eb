"""What the probe server's warm-up export (probe/server.py, warm_exporter) saves: export-stage
probes of a sample model, in process and in a child process per export, from a server that made
the warm-up export and from one that did not (BISECTOR_WARM_EXPORT=0), interleaved.

    python bench/warm_export.py [--runs 3] [--model sample_models/clean_transformer.py:Net]

Prints each configuration's median probe wall time and the servers' start-up (imports, warm-up).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bisector.model.schedule import PROFILES, build_schedule  # noqa: E402
from bisector.model.spec import build_input_plan, parse_model_spec  # noqa: E402
from bisector.probe.pool import ProbePool  # noqa: E402
from bisector.probe.server import WARM_ENV  # noqa: E402
from bisector.probe.types import ProbeOk, ProbeOptions, ProbeRequest  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", default=str(ROOT / "sample_models" / "clean_transformer.py") + ":Net")
    ap.add_argument("--input", default="ids=B,T:int64:0:1000")
    ap.add_argument("--dim", action="append", default=None)
    args = ap.parse_args()
    spec = parse_model_spec(args.model)
    plan = build_input_plan([args.input], args.dim or ["B=1:4", "T=5:48"], spec)
    schedule = build_schedule(plan.dims, PROFILES["export"])
    requests = {
        "in process": ProbeRequest(spec, plan, "export", schedule, ProbeOptions(), label="export"),
        "child per export": ProbeRequest(
            spec, plan, "export", schedule, replace(ProbeOptions(), export_in_child="fork"), label="export"
        ),
    }
    walls: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pools = {
            warm: ProbePool(Path(tmp) / warm, env={**os.environ, WARM_ENV: "1" if warm == "warm" else "0"})
            for warm in ("warm", "cold")
        }
        try:
            for _ in range(args.runs):
                for warm, pool in pools.items():
                    for what, request in requests.items():
                        got = pool.run(request)
                        if not isinstance(got, ProbeOk):
                            print(f"{warm} {what}: {type(got).__name__} {getattr(got, 'message', '')}")
                            continue
                        walls.setdefault((warm, what), []).append(got.wall_s)
            for warm, pool in pools.items():
                info = pool.server_info()
                print(f"server {warm}: imports {info.get('import_s')} s, warm-up export {info.get('warm_export_s')} s")
        finally:
            for pool in pools.values():
                pool.close()
    steps = len(schedule.steps)
    for (warm, what), w in sorted(walls.items()):
        print(f"{what:>17} {warm}: median {statistics.median(w):5.2f} s per probe of {steps} exports ({len(w)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
