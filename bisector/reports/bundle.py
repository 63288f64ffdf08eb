"""Repro bundles: a folder per culprit a user can zip and attach to an upstream issue.

    <bundle>/<stage>-<region>/
        repro.py          torch + onnxruntime + psutil only (bisector/reports/repro_script.py, verbatim)
        bundle.json       what repro.py rebuilds: the model file and name, region, stage, exporter
        model/            copies of the user's model file and the modules beside it it imports
        inputs.npz        the region's recorded calls (tensors), inputs.json (their structure)
        model.onnx        the exported region (export and inference culprits)
        onnx_detail.json  op histogram; for inference a profiled ORT run (profile.json beside it)
        curves.json/.png  what bisector measured: the region's curve and the control's
        env.txt           python -m torch.utils.collect_env, versions, ORT providers, bisector
        ISSUE.md          for the tracker that owns the growth: pre-filled like the pytorch /
                          onnxruntime bug templates when the toolchain keeps it (toolchain-leak),
                          else for the team's own tracker, with no upstream template

The parts that need torch and the user's code are made in a child process (bundle_child.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bisector import __version__
from bisector.common.errors import UserError
from bisector.common.marks import BUNDLE, mark, owned, real_dir
from bisector.common.project import project_root
from bisector.fix.sources import user_sources
from bisector.model.kinds import Kind
from bisector.probe import containment
from bisector.probe.pool import default_mem_cap
from bisector.reports.issue import issue_text, measured_text
from bisector.reports.plots import stage_chart
from bisector.reports.targets import Bundle, BundleTarget, report_parts, targets_of

MAX_SHAPES = 6  # repeated shapes and a few novel ones: enough to show either kind of growth


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "root"


def _steps(samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Distinct input shapes of the curve, repeated ones first, in the order first seen."""
    seen: dict[str, dict[str, Any]] = {}
    for phase in ("repeat", "warmup", "novel", "within"):
        for s in samples:
            if s.get("phase") != phase:
                continue
            key = json.dumps(sorted((s.get("dims") or {}).items()))
            if key not in seen:
                seen[key] = {
                    "dims": dict(s.get("dims") or {}),
                    "phase": "repeat" if phase in ("repeat", "warmup") else phase,
                }
    return list(seen.values())[:MAX_SHAPES]


_ENV_CACHE: dict[str, Any] = {}


def start_collect_env() -> None:
    """Start torch's environment report (~5 s: it shells out to pip, nvidia-smi...) once per
    process, alongside the bundle's child, so the two waits overlap."""
    if "proc" not in _ENV_CACHE and "text" not in _ENV_CACHE:
        try:
            _ENV_CACHE["proc"] = subprocess.Popen(
                [sys.executable, "-m", "torch.utils.collect_env"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError as exc:
            _ENV_CACHE["text"] = f"(python -m torch.utils.collect_env failed: {exc})\n"


def collect_env(timeout_s: float = 180.0) -> str:
    start_collect_env()
    if "text" not in _ENV_CACHE:
        proc = _ENV_CACHE.pop("proc")
        try:
            out, _ = proc.communicate(timeout=timeout_s)
            _ENV_CACHE["text"] = out or "(python -m torch.utils.collect_env printed nothing)\n"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            _ENV_CACHE["text"] = f"(python -m torch.utils.collect_env took more than {timeout_s:.0f} s)\n"
    return _ENV_CACHE["text"]


def _project_relative(path: str) -> str:
    """path from its project's root (the nearest pyproject.toml or .git above it), in / form."""
    real = Path(path).resolve()
    return real.relative_to(project_root(real)).as_posix()


def _claim(folder: Path) -> Path:
    """The bundle's folder, emptied: only a bundle bisector wrote is replaced (marked, or from
    before the mark: its files); anything else there is the user's, and refused."""
    if folder.exists() or folder.is_symlink():
        legacy = (folder / "bundle.json").is_file() and (folder / "repro.py").is_file()
        if not (real_dir(folder) and (owned(folder, BUNDLE) or legacy)):
            raise UserError(f"{folder} holds files bisector did not write: choose another --bundle folder")
        shutil.rmtree(folder)
    mark(folder, BUNDLE)
    return folder


def _copy_sources(model: Any, folder: Path) -> None:
    """The user's model file and its sibling modules, so the bundle stands alone once zipped."""
    home = Path(model.path).resolve().parent
    for path in user_sources(model):
        p = Path(path)
        try:
            rel = p.relative_to(home)
        except ValueError:
            continue
        (folder / "model" / rel).parent.mkdir(parents=True, exist_ok=True)
        # The file's own bytes: its encoding, BOM and line endings are what the repro must import.
        (folder / "model" / rel).write_bytes(p.read_bytes())


def _build_request(measure: Any, target: BundleTarget) -> dict[str, Any]:
    """build.json: what bundle_child.py rebuilds and records."""
    model, plan, options = measure.model, measure.plan, measure.options
    steps = _steps(target.samples) or [{"dims": {k: lo for k, (lo, hi) in plan.dims.items()}, "phase": "repeat"}]
    return {
        "model": model.to_json(),
        "plan": plan.to_json(),
        "seed": options.seed,
        "stage": target.stage,
        "region": target.region,
        "steps": steps,
        "exporter": options.probe.exporter,
    }


def _run_child(measure: Any, target: BundleTarget, folder: Path, timeout_s: float) -> tuple[dict[str, Any], str]:
    """Run bundle_child.py on the folder: (what it wrote to child.json, the error, or "")."""
    (folder / "build.json").write_text(json.dumps(_build_request(measure, target), indent=1))
    start_collect_env()
    env = dict(os.environ)
    # The child imports bisector from wherever this process did (an editable checkout or site-packages).
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Contained as a probe is (probe/containment.py), under the run's own memory cap: what the
    # model starts (a daemon at import) is killed when the child ends, and never outlives bisector.
    done = containment.run(
        [sys.executable, "-m", "bisector.reports.bundle_child", str(folder)],
        timeout_s=timeout_s,
        mem_cap=measure.options.mem_cap or default_mem_cap(),
        env=env,
    )
    error = ""
    if done.stopped == "timeout":
        error = f"the bundle's child process took more than {timeout_s:.0f} s"
    elif done.stopped == "memory-cap":
        error = f"the bundle's child process went over the memory cap ({done.peak_bytes >> 20} MB)"
    elif done.returncode not in (0, 1):
        last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or [""])[-1]
        error = f"the bundle's child process exited with {done.returncode}: {last}"
    child: dict[str, Any] = {}
    try:
        child = json.loads((folder / "child.json").read_text())
    except (OSError, ValueError):
        error = error or "the bundle's child process wrote no result"
    if child.get("error"):
        error = child["error"]
    (folder / "build.json").unlink(missing_ok=True)
    return child, error


def _bundle_json(measure: Any, target: BundleTarget, child: Mapping[str, Any]) -> dict[str, Any]:
    """bundle.json: what repro.py rebuilds (the model file and name, region, stage, exporter)."""
    model = measure.model
    steps_n = 20 if target.stage == "export" else 200
    return {
        "spec": model.label,
        "model_file": f"model/{Path(model.path).name}",
        # Relative to the project: a bundle goes into a public issue, the home folder not.
        "original_path": _project_relative(model.path),
        "model_name": model.name,
        "init_kwargs": dict(model.init_kwargs),
        "region": target.region,
        "region_type": child.get("region_type", ""),
        "stage": target.stage,
        "exporter": child.get("exporter") or measure.options.probe.exporter,
        "input_names": child.get("input_names"),
        "onnx": "model.onnx",
        "calls": steps_n,
        "every": steps_n // 10,
        "warmup": 0 if target.kind == Kind.SHAPE_GROWTH else 2 if target.stage == "export" else 4,
        "measured": measured_text(target),
        "all_shapes": target.kind == Kind.SHAPE_GROWTH,
    }


def _write_curves(folder: Path, target: BundleTarget, noise_band: float) -> None:
    """curves.json and curves.png: what bisector measured, the region's curve and the control's."""
    curves = {
        "stage": target.stage,
        "region": target.region,
        "kind": target.kind,
        "figures": {k: v for k, v in target.figures.items() if k not in ("samples", "control_samples")},
        "samples": list(target.samples),
        "control_samples": list(target.control_samples),
    }
    (folder / "curves.json").write_text(json.dumps(curves, indent=1))
    if target.samples:
        (folder / "curves.png").write_bytes(
            stage_chart(
                target.samples,
                target.control_samples,
                title=f"{target.region or '<root>'} {target.stage}: {target.kind}",
                verdict=target.kind,
                floor_per_call=target.figures.get("floor_bytes_per_call"),
                noise_band=noise_band,
                decided_by=target.figures.get("decided_by"),
            )
        )


def write_bundle(report: Any, target: BundleTarget, out: str | Path, timeout_s: float = 300.0) -> Bundle:
    """One bundle folder for one target (never raises for the user's model: errors come back)."""
    measure, _ = report_parts(report)
    folder = _claim(Path(out) / f"{target.stage}-{_slug(target.region or 'root')}")
    _copy_sources(measure.model, folder)
    child, error = _run_child(measure, target, folder, timeout_s)
    shutil.copyfile(Path(__file__).with_name("repro_script.py"), folder / "repro.py")
    (folder / "bundle.json").write_text(json.dumps(_bundle_json(measure, target, child), indent=1))
    _write_curves(folder, target, measure.options.bands.rss)
    versions = child.get("versions") or {}
    env_lines = [f"bisector {__version__}"] + [f"{k}: {v}" for k, v in versions.items()]
    (folder / "env.txt").write_text("\n".join(env_lines) + "\n\n" + collect_env())
    (folder / "ISSUE.md").write_text(issue_text(measure.model.label, target, child, (folder / "env.txt").read_text()))
    if error:
        (folder / "ERROR.txt").write_text(error + "\n\n" + child.get("traceback", ""))
    return Bundle(target, folder, error, child.get("onnx_detail") or {})


def write_bundles(report: Any, out: str | Path, unfixed_only: bool = False) -> list[Bundle]:
    measure, _ = report_parts(report)
    return [write_bundle(report, t, out, timeout_s=measure.options.timeout_s) for t in targets_of(report, unfixed_only)]
