"""`bisector repair` over N models: the local executor against Ray on this machine, side by side.

    python bench/fleet.py --models 8

The models are copies of quick samples (list_append, clean_cnn, forward_hook; eager stage) under
distinct names, so nothing is resumed. Both executors get the same concurrency: the local one
`--models-at-once C`, Ray `num_cpus=C` on this machine and one CPU a task; `--jobs 1` for both.
Prints, per executor: wall time, time inside the models' own repair (the sum of each model's
wall_s), and the overhead per model, (wall x C - model time) / N: what running the fleet costs
beyond the models' own work (starting probe servers, Ray's start and scheduling, writing <out>).
Never fails on time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
KINDS = {
    "list_append": 'inputs = ["x=B,32"]',
    "clean_cnn": 'inputs = ["x=B,3,H,W"]\ndims = ["B=1:4", "H=8:32", "W=8:32"]',
    "forward_hook": 'inputs = ["x=B,3,H,W"]\ndims = ["B=1:4", "H=8:32", "W=8:32"]',
}


def make_project(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    entries = []
    kinds = list(KINDS)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        name = f"m{i:03d}_{kind}"
        shutil.copy(SAMPLES / f"{kind}.py", root / f"{name}.py")
        entries.append(f'[[tool.bisector.models]]\nspec = "{name}.py:Net"\n{KINDS[kind]}\n')
    (root / "pyproject.toml").write_text('[tool.bisector]\nstages = ["eager"]\n\n' + "\n".join(entries))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def run(root: Path, executor: str, concurrency: int) -> dict[str, float]:
    from bisector import api

    extra: dict[str, float] = {}
    if executor == "ray":
        import logging

        import ray

        t = time.perf_counter()
        ray.init(
            num_cpus=concurrency,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        extra["ray_start_s"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        summary = api.repair(
            config=str(root / "pyproject.toml"),
            out=str(root / f"out-{executor}"),
            jobs=1,
            models_at_once=concurrency,
            executor=executor,
        )
    finally:
        if executor == "ray":
            import ray

            ray.shutdown()
    wall = time.perf_counter() - t + extra.get("ray_start_s", 0.0)
    n = len(summary.results)
    model_s = sum(r.wall_s for r in summary.results)
    statuses = sorted({r.status for r in summary.results})
    return {
        "wall_s": wall,
        "model_s": model_s,
        "per_model_s": wall / n,
        "mean_model_s": model_s / n,
        "overhead_per_model_s": (wall * concurrency - model_s) / n,
        "statuses": ",".join(statuses),
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=8, help="how many models (copies of the samples)")
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 2, help="models at once (Ray: num_cpus)")
    args = ap.parse_args()
    os.environ.setdefault("BISECTOR_CACHE", tempfile.mkdtemp(prefix="bisector-bench-cache-"))
    with tempfile.TemporaryDirectory(prefix="bisector-fleet-bench-") as tmp:
        root = make_project(Path(tmp) / "project", args.models)
        # Warm the control cache once so neither executor pays for the control runs alone.
        warm = make_project(Path(tmp) / "warm", 3)
        from bisector import api

        api.repair(config=str(warm / "pyproject.toml"), out=str(warm / "out"), jobs=1)
        rows = {ex: run(root, ex, args.concurrency) for ex in ("local", "ray")}
    print(
        f"{args.models} models (eager stage; list_append / clean_cnn / forward_hook copies), "
        f"{args.concurrency} at once, --jobs 1, {os.cpu_count()} cores"
    )
    print(f"{'':<30}{'local':>12}{'ray':>12}")
    for key, label in (
        ("wall_s", "wall time (s)"),
        ("per_model_s", "wall / model (s)"),
        ("mean_model_s", "mean model repair (s)"),
        ("overhead_per_model_s", "overhead / model (s)"),
        ("ray_start_s", "ray.init (s)"),
    ):
        cells = [f"{rows[ex][key]:.1f}" if key in rows[ex] else "-" for ex in ("local", "ray")]
        print(f"{label:<30}{cells[0]:>12}{cells[1]:>12}")
    print(f"{'statuses':<30}{rows['local']['statuses']:>12}{rows['ray']['statuses']:>12}")


if __name__ == "__main__":
    sys.exit(main())
