"""Median cost of starting a probe: forked from the probe server vs a fresh interpreter.

    python bench/probe_overhead.py [--runs 10]

Each probe runs the no-op stage (imports done, nothing measured), so its wall time is the cost
of starting a child, handing it the request and reading its result. The two ways are measured
side by side, interleaved, in one run. The server's own start-up (paid once per run of bisector)
is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bisector.model.schedule import PROFILES, build_schedule  # noqa: E402
from bisector.model.spec import build_input_plan, parse_model_spec  # noqa: E402
from bisector.probe.pool import ProbePool  # noqa: E402
from bisector.probe.types import ProbeKind, ProbeOk, ProbeRequest  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    spec = parse_model_spec(f"{ROOT / 'sample_models' / 'clean_cnn.py'}:Net")
    plan = build_input_plan(["x=B,3,H,W"], [], spec)
    request = ProbeRequest(
        spec, plan, None, build_schedule(plan.dims, PROFILES["eager"]), label="noop", kind=ProbeKind.NOOP
    )

    with (
        tempfile.TemporaryDirectory() as tmp,
        ProbePool(Path(tmp) / "s") as server,
        ProbePool(Path(tmp) / "f", fresh=True) as fresh,
    ):
        t = time.perf_counter()
        assert isinstance(server.run(request), ProbeOk)  # starts the server
        server_start = time.perf_counter() - t
        times: dict[str, list[float]] = {"server": [], "fresh": []}
        for _ in range(args.runs):
            for name, pool in (("server", server), ("fresh", fresh)):
                t = time.perf_counter()
                result = pool.run(request)
                times[name].append(time.perf_counter() - t)
                assert isinstance(result, ProbeOk), result
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"probe start cost, median of {args.runs} (no-op probe, wall time in the parent)")
    print(
        f"  from the probe server : {med['server'] * 1000:8.1f} ms   (min {min(times['server']) * 1000:.1f}, "
        f"max {max(times['server']) * 1000:.1f})"
    )
    print(
        f"  fresh interpreter     : {med['fresh'] * 1000:8.1f} ms   (min {min(times['fresh']) * 1000:.1f}, max "
        f"{max(times['fresh']) * 1000:.1f})"
    )
    print(
        f"  server is {med['fresh'] / med['server']:.0f}x cheaper; the server itself started in "
        f"{server_start:.1f} s (once per run)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
