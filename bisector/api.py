"""The library face of bisector: what the CLI calls, and what scripts and CI jobs call directly.

    from bisector import api
    report = api.measure("models/net.py:Net", inputs=["x=B,3,H,W"], stages=["eager", "inference"])
    print(report.verdict, report.stages["inference"].verdict.growth_bytes_per_new_shape)

Strings are parsed and checked here, with defaults from ``[tool.bisector]`` in the model's
pyproject.toml; bad input raises ``bisector.errors.UserError`` with one line that says what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from bisector.config import MIN_MEM_CAP, as_list, load_config
from bisector.errors import UserError
from bisector.measure import Events, MeasureOptions, MeasureReport
from bisector.measure import measure as _measure
from bisector.probe.types import EXPORTERS, STAGES, ProbeOptions
from bisector.spec import (
    InputPlan, ModelSpec, build_input_plan, largest_input_bytes, model_has_inputs_hook, parse_dim, parse_model_spec,
)
from bisector.units import format_bytes, parse_size
from bisector.verdict import Bands

if TYPE_CHECKING:
    from bisector.infer_inputs import Inferred
    from bisector.find import FindReport
    from bisector.batch import RepairSummary
    from bisector.repair import FixReport

DEVICES = ("auto", "cpu", "cuda")
METRICS = ("rss", "uss")


@dataclass(frozen=True)
class Prepared:
    model: ModelSpec
    plan: InputPlan
    options: MeasureOptions
    config: Mapping[str, Any]
    # The inputs inferred from the model when none were given (the CLI prints them as flags).
    inferred: "Inferred | None" = None


def prepare(
    spec: str | ModelSpec,
    inputs: Iterable[str] = (),
    dims: Iterable[str] = (),
    *,
    stages: Iterable[str] | None = None,
    exporter: str | None = None,
    device: str | None = None,
    init_kwargs: str | Mapping[str, Any] | None = None,
    seed: int | None = None,
    noise_rss: str | int | None = None,
    noise_gpu: str | int | None = None,
    metric: str | None = None,
    retries: int | None = None,
    jobs: int | None = None,
    fresh: bool = False,
    timeout_s: float | None = None,
    mem_cap: str | int | None = None,
    keep_autograd: bool = False,
    tracemalloc: bool = False,
    cache: bool = True,
    config: str | None = None,
    floor: Iterable[str] | None = None,
) -> Prepared:
    """Parse and check everything, merging `[tool.bisector]` defaults under the arguments given."""
    if isinstance(spec, ModelSpec):
        model = spec
    else:
        model = parse_model_spec(spec, init_kwargs)
    cfg = load_config(model.path, config).for_model(model.path, model.name)
    if not isinstance(spec, ModelSpec) and init_kwargs is None and cfg.get("init_kwargs"):
        model = parse_model_spec(spec, cfg["init_kwargs"])

    inputs = list(inputs) or as_list(cfg.get("inputs"), "inputs")
    dims = list(dims) or as_list(cfg.get("dims"), "dims")
    # No inputs from flags, hook or config: infer them, in a child, once the cheap checks passed.
    infer_later = not inputs and not model_has_inputs_hook(model)
    for text in dims if infer_later else ():
        parse_dim(text)
    plan = None if infer_later else build_input_plan(inputs, dims, model)

    stage_list = tuple(stages or as_list(cfg.get("stages"), "stages") or STAGES)
    for s in stage_list:
        if s not in STAGES:
            raise UserError(f"unknown stage {s!r}; use one of {', '.join(STAGES)}")
    stage_list = tuple(dict.fromkeys(stage_list))
    exporter = exporter or cfg.get("exporter")
    if exporter is not None and exporter not in EXPORTERS:
        raise UserError(f"unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    device = device or cfg.get("device") or "auto"
    if device not in DEVICES:
        raise UserError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    metric = metric or cfg.get("metric") or "rss"
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    bands = Bands(
        rss=parse_size(noise_rss if noise_rss is not None else cfg.get("noise_rss", "5MB"), "--noise-rss"),
        gpu=parse_size(noise_gpu if noise_gpu is not None else cfg.get("noise_gpu", "200MB"), "--noise-gpu"),
    )
    if bands.rss <= 0 or bands.gpu <= 0:
        raise UserError("noise bands must be positive sizes, e.g. --noise-rss 5MB")
    retries = int(retries if retries is not None else cfg.get("retries", 2))
    if retries < 0:
        raise UserError("--retries must be 0 or more")
    if jobs is not None and jobs < 1:
        raise UserError("--jobs must be 1 or more")
    timeout = float(timeout_s if timeout_s is not None else cfg.get("timeout", 300))
    if not 0 < timeout < float("inf"):
        raise UserError("--timeout must be a positive number of seconds")
    cap_value = mem_cap if mem_cap is not None else cfg.get("mem_cap")
    cap = parse_size(cap_value, "--mem-cap") if cap_value is not None else None
    if cap is not None and cap < MIN_MEM_CAP:
        # Every probe would be killed at once and reported as crashed (exit 4): say it here.
        raise UserError(f"--mem-cap {cap_value}: a probe needs at least {format_bytes(MIN_MEM_CAP)} (torch alone takes ~300 MB in a probe); try e.g. --mem-cap 8GB")
    inferred = None
    if plan is None:
        from bisector.infer_inputs import infer

        inferred = infer(model, dims, timeout_s=timeout)
        plan = build_input_plan(list(inferred.inputs), [*dims, *inferred.dims], model)
    _check_inputs_fit(plan, cap)
    cores = os.cpu_count() or 1
    n_jobs = jobs or cores
    probe = ProbeOptions(
        exporter=exporter,
        device=device,
        keep_autograd=keep_autograd,
        tracemalloc=tracemalloc,
        # Probes running side by side share the cores instead of each taking all of them.
        threads=max(1, cores // n_jobs),
    )
    options = MeasureOptions(
        stages=stage_list,
        probe=probe,
        seed=int(seed if seed is not None else cfg.get("seed", 0)),
        bands=bands,
        metric=metric,
        retries=retries,
        jobs=n_jobs,
        fresh=bool(fresh or cfg.get("fresh")),
        timeout_s=timeout,
        mem_cap=cap,
        cache_dir=None if cache else "",
        floor_targets=parse_floors(list(floor or ()) or as_list(cfg.get("floor"), "floor"), stage_list),
    )
    return Prepared(model=model, plan=plan, options=options, config=cfg, inferred=inferred)


def parse_floors(values: list[str], stages: Iterable[str]) -> dict[str, float]:
    """--floor SIZE (every stage) or STAGE=SIZE, over the defaults (measure.FLOOR_TARGETS)."""
    from bisector.measure import FLOOR_TARGETS

    out = dict(FLOOR_TARGETS)
    for value in values:
        stage, sep, size = str(value).rpartition("=")
        if sep and stage not in STAGES:
            raise UserError(f"--floor {value}: unknown stage {stage!r}; use SIZE or STAGE=SIZE with one of {', '.join(STAGES)}")
        bytes_ = parse_size(size, "--floor")
        if bytes_ <= 0:
            raise UserError(f"--floor {value}: the floor must be a positive size, e.g. 4KB")
        for s in ([stage] if sep else list(STAGES)):
            out[s] = float(bytes_)
    return out


def _check_inputs_fit(plan: InputPlan, cap: int | None) -> None:
    """Refuse, before any probe starts, inputs whose largest shape cannot fit under the memory cap:
    a probe would only be killed at the cap (or fail to allocate) and read as a crash."""
    from bisector.probe.pool import default_mem_cap

    need, shapes = largest_input_bytes(plan)
    limit = cap if cap is not None else default_mem_cap()
    if need > limit:
        raise UserError(
            f"the inputs at their largest ({shapes}) take {format_bytes(need)}, over the memory cap of "
            f"{format_bytes(limit)}; lower the --dim ranges or raise --mem-cap"
        )


def measure(spec: str | ModelSpec, inputs: Iterable[str] = (), dims: Iterable[str] = (), *, events: Events | None = None, **kwargs: Any) -> MeasureReport:
    """Measure every asked-for stage of a model; see ``prepare`` for the arguments."""
    p = prepare(spec, inputs, dims, **kwargs)
    return _measure(p.model, p.plan, p.options, events=events)


def find(
    spec: str | ModelSpec,
    inputs: Iterable[str] = (),
    dims: Iterable[str] = (),
    *,
    events: Events | None = None,
    run_dir: str | None = None,
    **kwargs: Any,
) -> "FindReport":
    """Measure, then bisect the module tree to the smallest leaking regions (see find.py)."""
    from bisector.find import find as _find

    p = prepare(spec, inputs, dims, **kwargs)
    return _find(p.model, p.plan, p.options, events=events, run_dir=run_dir)


def fix(
    spec: str | ModelSpec,
    inputs: Iterable[str] = (),
    dims: Iterable[str] = (),
    *,
    events: Events | None = None,
    run_dir: str | None = None,
    allow_output_changes: bool = False,
    fixers: Iterable[str] = (),
    **kwargs: Any,
) -> "FixReport":
    """Find the culprits, then try, re-measure and keep the fixes that flatten them (repair.py)."""
    from bisector.find import Finder
    from bisector.repair import Repairer, failure_culprits

    p = prepare(spec, inputs, dims, **kwargs)
    finder = Finder(p.model, p.plan, p.options, events=events, run_dir=run_dir)
    try:
        found = failure_culprits(finder.find())
        return Repairer(finder, found, allow_output_changes=allow_output_changes, only=fixers).run()
    finally:
        finder.close()


def repair(
    config: str | None = None,
    manifest: str | None = None,
    out: str = ".bisector/repair",
    jobs: int | None = None,
    models_at_once: int = 2,
    allow_output_changes: bool = False,
    fresh: bool = False,
    progress: Any = None,
    report_dir: str | None = None,
    executor: str = "local",
    address: str | None = None,
    shard: Any = None,
) -> "RepairSummary":
    """Find and fix every model listed in [[tool.bisector.models]] (or a manifest); see batch.py.
    `executor="ray"` runs one Ray task per model (on the cluster at `address`, else a local Ray);
    `shard` ("I/N" or a batch.Shard) repairs only that share of the models."""
    from bisector.batch import Shard, load_models
    from bisector.batch import repair as _repair

    if executor == "ray":
        from bisector.fleet import require_ray

        require_ray()
    part = Shard.parse(shard) if isinstance(shard, str) else shard
    return _repair(load_models(config, manifest), out=out, jobs=jobs, models_at_once=models_at_once,
                   allow_output_changes=allow_output_changes, fresh=fresh, progress=progress, report_dir=report_dir,
                   executor=executor, address=address, shard=part)


def merge(
    outs: Any,
    config: str | None = None,
    manifest: str | None = None,
    out: str = ".bisector/repair",
    allow_output_changes: bool = False,
) -> "RepairSummary":
    """Join the outputs of sharded repairs (`shard="I/N"`) into one, as one unsharded run writes it."""
    from bisector.batch import load_models
    from bisector.batch import merge as _merge

    return _merge(load_models(config, manifest), list(outs), out, allow_output_changes=allow_output_changes)
