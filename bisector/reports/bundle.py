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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bisector import __version__
from bisector.common.errors import UserError
from bisector.common.marks import BUNDLE, mark, owned, real_dir
from bisector.common.project import project_root
from bisector.common.units import format_bytes
from bisector.fix.sources import user_sources
from bisector.fixers.base import UNSUPPORTED_OP
from bisector.judge.retention import describe
from bisector.model.kinds import Kind
from bisector.probe import containment
from bisector.probe.pool import default_mem_cap
from bisector.reports.plots import stage_chart

PER = {"eager": "call", "export": "export", "inference": "run"}
MAX_SHAPES = 6  # repeated shapes and a few novel ones: enough to show either kind of growth


@dataclass(frozen=True)
class BundleTarget:
    stage: str
    region: str
    kind: str
    figures: Mapping[str, Any]  # growth figures as in the JSON (bytes, objects, floor, metric)
    samples: Sequence[Mapping[str, Any]] = ()
    control_samples: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class Bundle:
    target: BundleTarget
    path: Path
    error: str = ""
    onnx_detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.target.stage,
            "region": self.target.region,
            "path": str(self.path),
            "error": self.error,
            "onnx_detail": dict(self.onnx_detail),
        }


def _parts(report: Any) -> tuple[Any, Any]:
    """(MeasureReport, FindReport or None) of any report."""
    if hasattr(report, "evaluations"):
        return report.find.measure, report.find
    if hasattr(report, "searches"):
        return report.measure, report
    return report, None


def targets_of(report: Any, unfixed_only: bool = False) -> list[BundleTarget]:
    """Every culprit (those without a kept fix when unfixed_only); with no culprit, the whole model
    in each stage that is not clean, or in its first stage (a clean model's flat repro)."""

    measure, find = _parts(report)
    out = []
    if find is not None:
        for c in find.culprits:
            if c.kind == UNSUPPORTED_OP:
                continue  # nothing to loop: the stage never ran
            if unfixed_only and hasattr(report, "fixed") and report.fixed(c):
                continue
            out.append(
                BundleTarget(
                    c.stage,
                    c.region,
                    c.kind,
                    c.to_json(),
                    c.figures.samples or (),
                    c.figures.control_samples or (),
                )
            )
        if out or unfixed_only or find.culprits:
            return out
    stages = [(s, r) for s, r in measure.stages.items() if r.curve is not None]
    bad = [(s, r) for s, r in stages if r.kind != Kind.CLEAN]
    for s, r in bad or stages[:1]:
        data = r.to_json()
        out.append(BundleTarget(s, "", r.kind, data, data.get("samples") or (), data.get("control_samples") or ()))
    return out


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


def _measured(t: BundleTarget) -> str:

    per = PER.get(t.stage, "call")
    f = t.figures
    bits = []
    if t.kind == Kind.SHAPE_GROWTH:
        bits.append(f"{format_bytes(f.get('growth_bytes_per_new_shape'), True)}/new shape")
    else:
        bits.append(f"{format_bytes(f.get('growth_bytes_per_call'), True)}/{per} ({f.get('growth_metric') or 'rss'})")
    if f.get("objects_per_call"):
        bits.append(f"{f['objects_per_call']:+.1f} live objects/{per}")
    return f"{t.kind}: " + ", ".join(bits)


def _project_relative(path: str) -> str:
    """path from its project's root (the nearest pyproject.toml or .git above it), in / form."""
    real = Path(path).resolve()
    return real.relative_to(project_root(real)).as_posix()


def write_bundle(report: Any, target: BundleTarget, out: str | Path, timeout_s: float = 300.0) -> Bundle:
    """One bundle folder for one target (never raises for the user's model: errors come back)."""

    measure, _ = _parts(report)
    model, plan, options = measure.model, measure.plan, measure.options
    folder = Path(out) / f"{target.stage}-{_slug(target.region or 'root')}"
    if folder.exists() or folder.is_symlink():
        # Only a bundle bisector wrote is replaced (marked, or from before the mark: its files).
        legacy = (folder / "bundle.json").is_file() and (folder / "repro.py").is_file()
        if not (real_dir(folder) and (owned(folder, BUNDLE) or legacy)):
            raise UserError(f"{folder} holds files bisector did not write: choose another --bundle folder")
        shutil.rmtree(folder)
    mark(folder, BUNDLE)
    # The user's model file and its sibling modules, so the bundle stands alone once zipped.
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
    steps = _steps(target.samples) or [{"dims": {k: lo for k, (lo, hi) in plan.dims.items()}, "phase": "repeat"}]
    build = {
        "model": model.to_json(),
        "plan": plan.to_json(),
        "seed": options.seed,
        "stage": target.stage,
        "region": target.region,
        "steps": steps,
        "exporter": options.probe.exporter,
    }
    (folder / "build.json").write_text(json.dumps(build, indent=1))
    error = ""
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
        mem_cap=options.mem_cap or default_mem_cap(),
        env=env,
    )
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

    shutil.copyfile(Path(__file__).with_name("repro_script.py"), folder / "repro.py")
    steps_n = 20 if target.stage == "export" else 200
    (folder / "bundle.json").write_text(
        json.dumps(
            {
                "spec": model.label,
                "model_file": f"model/{Path(model.path).name}",
                # Relative to the project: a bundle goes into a public issue, the home folder not.
                "original_path": _project_relative(model.path),
                "model_name": model.name,
                "init_kwargs": dict(model.init_kwargs),
                "region": target.region,
                "region_type": child.get("region_type", ""),
                "stage": target.stage,
                "exporter": child.get("exporter") or options.probe.exporter,
                "input_names": child.get("input_names"),
                "onnx": "model.onnx",
                "calls": steps_n,
                "every": steps_n // 10,
                "warmup": 0 if target.kind == Kind.SHAPE_GROWTH else 2 if target.stage == "export" else 4,
                "measured": _measured(target),
                "all_shapes": target.kind == Kind.SHAPE_GROWTH,
            },
            indent=1,
        )
    )
    (folder / "curves.json").write_text(
        json.dumps(
            {
                "stage": target.stage,
                "region": target.region,
                "kind": target.kind,
                "figures": {k: v for k, v in target.figures.items() if k not in ("samples", "control_samples")},
                "samples": list(target.samples),
                "control_samples": list(target.control_samples),
            },
            indent=1,
        )
    )
    if target.samples:
        (folder / "curves.png").write_bytes(
            stage_chart(
                target.samples,
                target.control_samples,
                title=f"{target.region or '<root>'} {target.stage}: {target.kind}",
                verdict=target.kind,
                floor_per_call=target.figures.get("floor_bytes_per_call"),
                noise_band=options.bands.rss,
                decided_by=target.figures.get("decided_by"),
            )
        )
    versions = child.get("versions") or {}
    env_lines = [f"bisector {__version__}"] + [f"{k}: {v}" for k, v in versions.items()]
    (folder / "env.txt").write_text("\n".join(env_lines) + "\n\n" + collect_env())
    (folder / "ISSUE.md").write_text(issue_text(model.label, target, child, (folder / "env.txt").read_text()))
    if error:
        (folder / "ERROR.txt").write_text(error + "\n\n" + child.get("traceback", ""))
    return Bundle(target, folder, error, child.get("onnx_detail") or {})


def upstream(t: BundleTarget) -> bool:
    """Whether the growth is the toolchain's (torch's or ONNX Runtime's own code keeps it, or the
    search put it outside the model's code): only then is the issue written for their tracker."""
    return t.kind == Kind.TOOLCHAIN_LEAK or t.figures.get("own_code") is False


def _toolchain_where(f: Mapping[str, Any], per: str) -> str:
    """What bisector found in the toolchain: its reasons, the objects it keeps and where, its
    Python sites, and a native stack when the traced probe recorded one."""
    repeat = (f.get("owners") or {}).get("repeat") or {}
    lines = [f"- {r}" for r in f.get("reasons") or () if "not your model" in r]
    for row in ((repeat.get("objects") or {}).get("sites") or {}).get("toolchain") or []:
        lines.append(f"- {row['objects']:g} objects/{per}: {row['where']}")
    for row in (repeat.get("sites") or {}).get("toolchain") or []:
        lines.append(f"- {format_bytes(row['bytes'])}/{per} of Python allocations at `{row['where']}`")
    stacks = repeat.get("native_sites") or repeat.get("native_stacks") or []
    for row in stacks:
        if isinstance(row, Mapping) and row.get("where"):
            lines.append(f"- native {format_bytes(row.get('bytes'))}/{per}: `{row['where']}`")
    return "\n".join(dict.fromkeys(lines))


def issue_text(spec: str, t: BundleTarget, child: Mapping[str, Any], env: str) -> str:
    """An issue body for the tracker that owns the growth: laid out as pytorch's bug template
    (eager, export) or onnxruntime's (inference) when the toolchain keeps it (upstream), else for
    the team's own tracker, with no upstream template (team_issue_text)."""
    if not upstream(t):
        return team_issue_text(spec, t, child, env)
    per = PER.get(t.stage, "call")
    region = t.region or "the whole model"
    what = {
        "eager": (
            f"Memory grows on every forward call of `{region}` ({child.get('region_type', '')}) under `torch.no_grad()`"
        ),
        "export": (
            f"Memory grows on every `torch.onnx.export` of `{region}` ({child.get('exporter') or 'default'} exporter)"
        ),
        "inference": f"Memory grows on every ONNX Runtime `InferenceSession.run` of the exported `{region}`",
    }[t.stage]
    if t.kind == Kind.SHAPE_GROWTH:
        what = what.replace("on every", "with every new input shape in")
    f = t.figures

    rows = [
        (
            "growth per " + per,
            f"{format_bytes(f.get('growth_bytes_per_call'), True)} ({f.get('growth_metric') or 'rss'})",
        ),
        ("growth per new input shape", format_bytes(f.get("growth_bytes_per_new_shape"), True)),
        (
            "live Python objects per " + per,
            "-" if f.get("objects_per_call") is None else f"{f['objects_per_call']:+.1f}",
        ),
        ("detection floor per " + per, format_bytes(f.get("floor_bytes_per_call"))),
    ]
    table = "| | measured |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    repro = (
        "```\nunzip bundle.zip && cd bundle\npip install torch onnxruntime psutil numpy\n"
        "python repro.py   # prints RSS, C heap and live objects every N calls\n```\n"
        "`repro.py` rebuilds the region from `model/` (or loads `model.onnx`), feeds the recorded inputs "
        "(`inputs.npz`) and repeats the call. `curves.png` is the curve measured in an isolated process "
        "against a trivial control module run the same way."
    )
    expected = f"Memory flat after warm-up: nothing kept per {per} once the same input shapes repeat."
    observed = f"{_measured(t)}\n\n{table}"
    held = f.get("retention") or []
    if held:
        # What bisector found holding the growth (retention.py): where to look first.
        observed += "\n\nWhat holds it:\n\n" + "\n".join(f"- {describe(r, per)}" for r in held)
    where = _toolchain_where(f, per)
    if where:
        observed += "\n\nWhere the toolchain keeps it (bisector's traced probe):\n\n" + where
    if t.stage == "inference":
        v = dict(child.get("versions") or {})
        return (
            f"# {what}\n\n<!-- for https://github.com/microsoft/onnxruntime/issues (bug report template) -->\n\n"
            f"### Describe the issue\n\n{what} (model `{spec}`).\n\nExpected: {expected}\n\nObserved: {observed}\n\n"
            f"### To reproduce\n\n{repro}\n\n### Urgency\n\n(fill in)\n\n"
            f"### Platform\n\n{v.get('platform', '')}\n\n### OS Version\n\nsee env.txt\n\n"
            "### ONNX Runtime Installation\n\nReleased Package\n\n### ONNX Runtime Version or Commit ID\n\n"
            f"{v.get('onnxruntime') or v.get('onnxruntime-gpu', '')}\n\n"
            "### ONNX Runtime API\n\nPython\n\n### Architecture\n\nsee env.txt\n\n### Execution Provider\n\n"
            f"{v.get('ort_providers', '')}\n\n"
            f"### Environment\n\n```\n{env}```\n"
        )
    return (
        f"# {what}\n\n<!-- for https://github.com/pytorch/pytorch/issues (bug report template) -->\n\n"
        f"### 🐛 Describe the bug\n\n{what} (model `{spec}`).\n\n**Expected:** {expected}\n\n"
        f"**Observed:** {observed}\n\n"
        f"Minimal repro:\n\n{repro}\n\n### Versions\n\n```\n{env}```\n"
    )


def team_issue_text(spec: str, t: BundleTarget, child: Mapping[str, Any], env: str) -> str:
    """An issue for the team's own tracker: the growth is in the model's code, so no upstream
    template and no request to torch or ONNX Runtime; where to look, the hint, the repro."""
    per = PER.get(t.stage, "call")
    region = t.region or "the whole model"
    f = t.figures
    kind = "with every new input shape" if t.kind == Kind.SHAPE_GROWTH else f"on every {per}"
    stage = {"eager": "forward", "export": "torch.onnx.export", "inference": "ONNX Runtime run"}[t.stage]
    lines = [
        f"# Memory grows {kind} in `{region}` ({stage})",
        "",
        "<!-- for this project's own issue tracker: the growth is in the model's code, not torch's or "
        "ONNX Runtime's -->",
        "",
        f"**Model:** `{spec}`, region `{region}`" + (f" ({child['region_type']})" if child.get("region_type") else ""),
        "",
        f"**Measured:** {_measured(t)}",
    ]
    held = f.get("retention") or []
    if held:
        lines += ["", "What holds it:", "", *(f"- {describe(r, per)}" for r in held)]
    repeat = (f.get("owners") or {}).get("repeat") or {}
    sites = (repeat.get("sites") or {}).get("model") or []
    if sites:
        lines += [
            "",
            "**Where it is allocated:**",
            "",
            *(f"- `{r['where']}`: {format_bytes(r['bytes'])}/{per}" for r in sites),
        ]
    if f.get("hint"):
        lines += ["", f"**Next step:** {f['hint']}"]
    lines += [
        "",
        "**Reproduce:** `python repro.py` in this folder (prints RSS, C heap and live objects every N calls); "
        "`bisector fix` proposes and measures fixes.",
        "",
        "<details><summary>Environment</summary>",
        "",
        f"```\n{env}```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def write_bundles(report: Any, out: str | Path, unfixed_only: bool = False) -> list[Bundle]:
    measure, _ = _parts(report)
    return [write_bundle(report, t, out, timeout_s=measure.options.timeout_s) for t in targets_of(report, unfixed_only)]
