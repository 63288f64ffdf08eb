"""From what the user gave (flags, a manifest entry, API keywords) to a checked measurement.

Strings are parsed and checked here, with defaults from ``[tool.bisector]`` in the model's
pyproject.toml; bad input raises ``bisector.common.errors.UserError`` with one line that says what to do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import psutil

from bisector.common.errors import UserError
from bisector.common.source_text import read_source
from bisector.common.units import format_bytes, parse_size
from bisector.find.infer_inputs import Inferred, infer
from bisector.judge.verdict import Bands
from bisector.lab.results import FLOOR_TARGETS, MeasureOptions
from bisector.model.choices import DEVICES, EXPORTERS, METRICS, STAGES, choose_exporter
from bisector.model.spec import (
    InputPlan,
    ModelSpec,
    build_input_plan,
    largest_input_bytes,
    model_has_inputs_hook,
    parse_dim,
    parse_model_spec,
)
from bisector.options.checks import MAX_SEED, MIN_MEM_CAP, as_list
from bisector.options.config import load_config
from bisector.probe.pool import default_mem_cap
from bisector.probe.types import ProbeOptions, merge_overrides

_log = logging.getLogger("bisector")


@dataclass(frozen=True)
class Prepared:
    model: ModelSpec
    plan: InputPlan
    options: MeasureOptions
    config: Mapping[str, Any]
    given: Options | None = None  # what the user gave: the run directory and their scripts
    # The inputs inferred from the model when none were given (the CLI prints them as flags).
    inferred: Inferred | None = None


@dataclass(frozen=True)
class Options:
    """The options every probing command shares, as the user gave them (flags, a manifest entry or
    keywords of the API): strings, checked and turned into a measurement by ``prepare``."""

    inputs: tuple[str, ...] = ()
    dims: tuple[str, ...] = ()
    stages: tuple[str, ...] | None = None
    exporter: str | None = None
    device: str | None = None
    init_kwargs: str | Mapping[str, Any] | None = None
    seed: int | None = None
    noise_rss: str | int | None = None
    noise_gpu: str | int | None = None
    metric: str | None = None
    retries: int | None = None
    jobs: int | None = None
    fresh: bool = False
    timeout_s: float | None = None
    mem_cap: str | int | None = None
    keep_autograd: bool = False
    tracemalloc: bool = False
    cache: bool = True
    config: str | None = None
    floor: tuple[str, ...] | None = None
    run_dir: str | None = None
    # The user's own scripts: measured with the settings they apply, and patched by fix.
    export_script: str | None = None
    infer_script: str | None = None
    artifact: str | None = None  # the model's name in those scripts; default: its file's stem

    @classmethod
    def of(cls, inputs: Iterable[str] = (), dims: Iterable[str] = (), **kwargs: Any) -> Options:
        """From API keywords; unknown ones are a user error, not a silent no-op."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise UserError(f"unknown option {unknown[0]!r}; known: {', '.join(sorted(known))}")
        for key in ("stages", "floor"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(inputs=tuple(inputs), dims=tuple(dims), **kwargs)


def prepare(spec: str | ModelSpec, o: Options = Options()) -> Prepared:
    """Parse and check everything, merging `[tool.bisector]` defaults under the options given, and
    the settings the user's export and serving scripts apply (when given)."""
    model, cfg, config_root = _model_and_config(spec, o)
    o = _configured_scripts(o, cfg, config_root)
    inputs = list(o.inputs) or as_list(cfg.get("inputs"), "inputs")
    dims = list(o.dims) or as_list(cfg.get("dims"), "dims")
    # No inputs from flags, hook or config: infer them, in a child, once the cheap checks passed.
    infer_later = not inputs and not model_has_inputs_hook(model)
    for text in dims if infer_later else ():
        parse_dim(text)
    plan = None if infer_later else build_input_plan(inputs, dims, model)
    options = _measure_options(o, cfg)
    inferred = None
    if plan is None:
        inferred = infer(model, dims, timeout_s=options.timeout_s, mem_cap=options.mem_cap)
        plan = build_input_plan(list(inferred.inputs), [*dims, *inferred.dims], model)
    _check_inputs_fit(plan, options.mem_cap)
    prepared = Prepared(model=model, plan=plan, options=options, config=cfg, given=o, inferred=inferred)
    return with_script_settings(
        prepared, o.export_script, o.infer_script, exporter_given=o.exporter is not None, key=o.artifact
    )


def _model_and_config(spec: str | ModelSpec, o: Options) -> tuple[ModelSpec, Mapping[str, Any], Path]:
    """The model, the `[tool.bisector]` values for it (the table's, overlaid with its entry's), and
    the folder its paths are relative to: the config's init_kwargs build the model when the
    options give none."""
    model = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec, o.init_kwargs)
    config = load_config(model.path, o.config)
    cfg = config.for_model(model.path, model.name)
    if not isinstance(spec, ModelSpec) and o.init_kwargs is None and cfg.get("init_kwargs"):
        model = parse_model_spec(spec, cfg["init_kwargs"])
    return model, cfg, Path(config.path).parent if config.path else Path.cwd()


def _configured_scripts(o: Options, cfg: Mapping[str, Any], root: Path) -> Options:
    """`[tool.bisector]`'s export and serving scripts and artifact name, where the options name
    none (they were read only from manifest entries before: a project's config named its scripts
    and `fix` measured and patched without them). Paths are the pyproject folder's; a script the
    project lacks adds no settings, as a manifest entry's does."""
    changes: dict[str, str] = {}
    for key in ("export_script", "infer_script"):
        named = cfg.get(key)
        path = root / str(named) if named else None
        if getattr(o, key) is None and path is not None and path.is_file():
            changes[key] = str(path)
    if o.artifact is None and cfg.get("artifact"):
        changes["artifact"] = str(cfg["artifact"])
    return replace(o, **changes) if changes else o


def _measure_options(o: Options, cfg: Mapping[str, Any]) -> MeasureOptions:
    """How the model is measured: each option given, else the config's, else the default; checked
    in the order the user reads them in --help (the first bad one is the error)."""
    stages = _stages(o, cfg)
    exporter = _exporter(o, cfg)
    device = _choice(o.device, cfg.get("device"), "auto", DEVICES, "device")
    metric = _choice(o.metric, cfg.get("metric"), "rss", METRICS, "metric")
    bands = _bands(o, cfg)
    retries = _retries(o, cfg)
    if o.jobs is not None and o.jobs < 1:
        raise UserError("--jobs must be 1 or more")
    timeout = float(o.timeout_s if o.timeout_s is not None else cfg.get("timeout", 300))
    if not 0 < timeout < float("inf"):
        raise UserError("--timeout must be a positive number of seconds")
    cap = _mem_cap(o, cfg)
    seed = _seed(o, cfg)
    cores = os.cpu_count() or 1
    n_jobs = o.jobs or cores
    # Probes running side by side share the cores instead of each taking all of them.
    probe = ProbeOptions(
        exporter=exporter,
        device=device,
        keep_autograd=o.keep_autograd,
        tracemalloc=o.tracemalloc,
        threads=max(1, cores // n_jobs),
    )
    return MeasureOptions(
        stages=stages,
        probe=probe,
        seed=seed,
        bands=bands,
        metric=metric,
        retries=retries,
        jobs=n_jobs,
        fresh=bool(o.fresh or cfg.get("fresh")),
        timeout_s=timeout,
        mem_cap=cap,
        cache_dir=None if o.cache else "",
        floor_targets=parse_floors(list(o.floor or ()) or as_list(cfg.get("floor"), "floor"), stages),
    )


def _stages(o: Options, cfg: Mapping[str, Any]) -> tuple[str, ...]:
    stages = tuple(o.stages or as_list(cfg.get("stages"), "stages") or STAGES)
    for s in stages:
        if s not in STAGES:
            raise UserError(f"unknown stage {s!r}; use one of {', '.join(STAGES)}")
    return tuple(dict.fromkeys(stages))


def _exporter(o: Options, cfg: Mapping[str, Any]) -> str | None:
    """The exporter named by the options or the config; None leaves it to the installed torch."""
    exporter = choose_exporter(o.exporter, cfg.get("exporter"), default=None)
    if exporter is not None and exporter not in EXPORTERS:
        raise UserError(f"unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    return exporter


def _choice(given: str | None, configured: str | None, default: str, allowed: tuple[str, ...], what: str) -> str:
    value = given or configured or default
    if value not in allowed:
        raise UserError(f"unknown {what} {value!r}; use one of {', '.join(allowed)}")
    return value


def _bands(o: Options, cfg: Mapping[str, Any]) -> Bands:
    bands = Bands(
        rss=parse_size(o.noise_rss if o.noise_rss is not None else cfg.get("noise_rss", "5MB"), "--noise-rss"),
        gpu=parse_size(o.noise_gpu if o.noise_gpu is not None else cfg.get("noise_gpu", "200MB"), "--noise-gpu"),
    )
    if bands.rss <= 0 or bands.gpu <= 0:
        raise UserError("noise bands must be positive sizes, e.g. --noise-rss 5MB")
    return bands


def _retries(o: Options, cfg: Mapping[str, Any]) -> int:
    retries = int(o.retries if o.retries is not None else cfg.get("retries", 2))
    if retries < 0:
        raise UserError("--retries must be 0 or more")
    return retries


def _seed(o: Options, cfg: Mapping[str, Any]) -> int:
    seed = int(o.seed if o.seed is not None else cfg.get("seed", 0))
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed {seed}: use a whole number from 0 to {MAX_SEED}")
    return seed


def _mem_cap(o: Options, cfg: Mapping[str, Any]) -> int | None:
    given = o.mem_cap if o.mem_cap is not None else cfg.get("mem_cap")
    if given is None:
        return None
    cap = parse_size(given, "--mem-cap")
    if cap < MIN_MEM_CAP:
        # Every probe would be killed at once and reported as crashed (exit 4): say it here.
        raise UserError(
            f"--mem-cap {given}: a probe needs at least {format_bytes(MIN_MEM_CAP)} (torch alone takes "
            "~300 MB in a probe); try e.g. --mem-cap 8GB"
        )
    _check_cap_fits_machine(cap, given)
    return cap


def _check_cap_fits_machine(cap: int, given: Any) -> None:
    """A cap no probe can reach is no cap: above the machine's memory and swap together, the
    kernel's OOM killer acts first, on any process. Refused, since a probe's runaway would then
    take the machine, not the probe, and `99999999999999999999` is a typo, not a choice. Above the
    memory but within the swap it does stop a probe, once it swaps: said in one warning line."""
    ram, swap = psutil.virtual_memory().total, psutil.swap_memory().total
    if cap > ram + swap:
        raise UserError(
            f"--mem-cap {given}: {format_bytes(cap)} is more than this machine's memory and swap "
            f"({format_bytes(ram + swap)}), so no probe would ever be stopped; give at most that, e.g. the "
            f"default {format_bytes(default_mem_cap())}"
        )
    if cap > ram:
        _log.warning(
            "--mem-cap %s is more than this machine's memory (%s): a probe swaps before the cap stops it",
            given,
            format_bytes(ram),
        )


def with_script_settings(
    prepared: Prepared,
    export_script: str | None,
    infer_script: str | None,
    exporter_given: bool,
    key: str | None = None,
) -> Prepared:
    """The prepared run measured with the settings the user's scripts already apply to this model
    (its export call, its session): a project patched by bisector measures as it will run."""
    for script, flag in ((export_script, "--export-script"), (infer_script, "--infer-script")):
        if script and not Path(script).is_file():
            raise UserError(f"{flag} {script} does not exist")
    back = read_back(prepared.model.path, export_script, infer_script, key)
    if exporter_given:
        back.pop("exporter", None)  # the option (or the manifest's choice) wins over the script
    if not back:
        return prepared
    options = replace(prepared.options, probe=prepared.options.probe.with_overrides(back))
    return replace(prepared, options=options)


def read_back(
    model_path: str, export_script: str | None, infer_script: str | None, key: str | None = None
) -> dict[str, Any]:
    """Settings the given scripts already apply to this model (its session, its export call); the
    scripts name it by ``key`` (default: the model file's stem, served from `<stem>.onnx`)."""

    key = key or Path(model_path).stem
    out: dict[str, Any] = {}
    if not (export_script or infer_script):
        return out
    # Their CST readers bring libcst and numpy (~0.7 s of every CLI start): only with a script.
    from bisector.patching.export_script import read_export  # noqa: PLC0415
    from bisector.patching.serving import read_serving  # noqa: PLC0415

    for script, reader in ((export_script, read_export), (infer_script, read_serving)):
        if script:
            try:
                out = merge_overrides(out, reader(read_source(script), key))
            except Exception:  # noqa: BLE001 - an unreadable script adds nothing; patching it says why
                pass
    return out


def parse_floors(values: list[str], stages: Iterable[str]) -> dict[str, float]:
    """--floor SIZE (every stage) or STAGE=SIZE, over the defaults (measure.FLOOR_TARGETS)."""
    out = dict(FLOOR_TARGETS)
    for value in values:
        stage, sep, size = str(value).rpartition("=")
        if sep and stage not in STAGES:
            raise UserError(
                f"--floor {value}: unknown stage {stage!r}; use SIZE or STAGE=SIZE with one of {', '.join(STAGES)}"
            )
        bytes_ = parse_size(size, "--floor")
        if bytes_ <= 0:
            raise UserError(f"--floor {value}: the floor must be a positive size, e.g. 4KB")
        for s in [stage] if sep else list(STAGES):
            out[s] = float(bytes_)
    return out


def _check_inputs_fit(plan: InputPlan, cap: int | None) -> None:
    """Refuse, before any probe starts, inputs whose largest shape cannot fit under the memory cap:
    a probe would only be killed at the cap (or fail to allocate) and read as a crash."""

    need, shapes = largest_input_bytes(plan)
    limit = cap if cap is not None else default_mem_cap()
    if need > limit:
        raise UserError(
            f"the inputs at their largest ({shapes}) take {format_bytes(need)}, over the memory cap of "
            f"{format_bytes(limit)}; lower the --dim ranges or raise --mem-cap"
        )
