"""The library face of bisector: what scripts and CI jobs call. A façade: each function parses its
keywords into Options, prepares the run, and calls the one path the CLI uses too.

    from bisector import api
    report = api.measure("models/net.py:Net", inputs=["x=B,3,H,W"], stages=["eager", "inference"])
    print(report.verdict, report.stages["inference"].verdict.growth_bytes_per_new_shape)

Keywords are those of ``bisector.pipeline.prepare.Options`` (stages, exporter, device, seed, jobs, run_dir,
export_script, ...), with defaults from ``[tool.bisector]`` in the model's pyproject.toml; bad input
raises ``bisector.common.errors.UserError`` with one line that says what to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bisector.common.errors import UserError
from bisector.find.localise import find as _find
from bisector.judge.fail_on import FailOn, parse_budget
from bisector.lab.measure import measure as _measure
from bisector.lab.runner import Events
from bisector.lab.stage import RUN_DIR
from bisector.model.spec import ModelSpec
from bisector.pipeline import run as pipeline
from bisector.pipeline.prepare import Options, Prepared, parse_floors
from bisector.pipeline.prepare import prepare as _prepare
from bisector.repairs.manifest import load_models
from bisector.repairs.one import RepairSettings
from bisector.repairs.ray import require_ray
from bisector.repairs.run import Shard
from bisector.repairs.run import merge as _merge
from bisector.repairs.run import repair as _repair
from bisector.store.outputs import check_output_dir, check_outputs

if TYPE_CHECKING:
    from bisector.find.localise import FindReport
    from bisector.lab.results import MeasureReport
    from bisector.pipeline.run import FixOutcome
    from bisector.repairs.results import RepairSummary

__all__ = ["Options", "Prepared", "find", "fix", "measure", "merge", "parse_floors", "prepare", "repair"]


def prepare(spec: str | ModelSpec, inputs: Iterable[str] = (), dims: Iterable[str] = (), **kwargs: Any) -> Prepared:
    """Parse and check everything (see Options for the keywords)."""
    return _prepare(spec, Options.of(inputs, dims, **kwargs))


def measure(
    spec: str | ModelSpec,
    inputs: Iterable[str] = (),
    dims: Iterable[str] = (),
    *,
    events: Events | None = None,
    **kwargs: Any,
) -> MeasureReport:
    """Measure every asked-for stage of a model."""

    p = prepare(spec, inputs, dims, **kwargs)
    return _measure(p.model, p.plan, p.options, events=events)


def find(
    spec: str | ModelSpec,
    inputs: Iterable[str] = (),
    dims: Iterable[str] = (),
    *,
    events: Events | None = None,
    **kwargs: Any,
) -> FindReport:
    """Measure, then bisect the module tree to the smallest leaking regions (see find.py)."""

    options = Options.of(inputs, dims, **kwargs)
    check_output_dir(options.run_dir or Path.cwd() / RUN_DIR, "run_dir")  # before any child starts
    p = _prepare(spec, options)
    return _find(p.model, p.plan, p.options, events=events, run_dir=p.given.run_dir if p.given else None)


def fix(
    spec: str | ModelSpec,
    inputs: Iterable[str] = (),
    dims: Iterable[str] = (),
    *,
    events: Events | None = None,
    allow_output_changes: bool = False,
    fixers: Iterable[str] = (),
    pick: int | None = None,
    apply: bool = False,
    force: bool = False,
    fail_on: Iterable[str] | str | None = None,
    budget: str | float | None = None,
    **kwargs: Any,
) -> FixOutcome:
    """find -> repair -> patches (-> apply): the path `bisector fix` takes (pipeline.py). The outcome
    has a status (clean, fixed, unfixed, unproven, error), the find and fix reports, and the patches.
    `fail_on` and `budget` ("2GB") as `--fail-on` and `--budget` take them."""

    options = Options.of(inputs, dims, **kwargs)
    request = pipeline.FixRequest(
        fixers=tuple(fixers),
        allow_output_changes=allow_output_changes,
        pick=pick,
        apply=apply,
        force=force,
        fail_on=FailOn.parse(fail_on, budget),
    )
    # Refused before any child starts (input inference included), as the CLI does.
    written = spec if isinstance(spec, str) else f"{spec.path}:{spec.name}"
    root = pipeline.check_request(written, options, request, pipeline.known_fixers())
    return pipeline.fix(_prepare(spec, options), request, pipeline.FixCallbacks(events=events), root=root)


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
    fail_on: Iterable[str] | str | None = None,
    budget: str | float | None = None,
) -> RepairSummary:
    """Find and fix every model listed in [[tool.bisector.models]] (or a manifest); see repairs/run.py.
    `executor="ray"` runs one Ray task per model (on the cluster at `address`, else a local Ray);
    `shard` ("I/N" or a repairs.run.Shard) repairs only that share of the models; `fail_on` (e.g.
    "leak,shape-growth:unbounded") overrides each entry's `fail_on`, and `budget` ("2GB") its `budget`."""

    # Checked here, for the CLI and for scripts alike, before any model is loaded.
    if models_at_once < 1:
        raise UserError("--models-at-once must be 1 or more")
    if executor not in ("local", "ray"):
        raise UserError(f"--executor {executor}: expected local or ray")
    if address and executor != "ray":
        raise UserError("--address names a Ray cluster: use it with --executor ray")
    if jobs is not None and jobs < 1:
        raise UserError("--jobs must be 1 or more")
    if executor == "ray":
        require_ray()
    check_outputs((out, "--out"), (report_dir, "--report"))
    part = Shard.parse(shard) if isinstance(shard, str) else shard
    models = load_models(config, manifest)
    if fail_on:
        policy = ",".join(FailOn.parse(fail_on).to_json())  # checked now, not once per model
        models = [replace(m, options={**m.options, "fail_on": policy}) for m in models]
    limit = parse_budget(budget)  # checked now, not once per model
    if limit is not None:
        models = [replace(m, options={**m.options, "budget": limit}) for m in models]
    settings = RepairSettings(
        out=Path(out),
        jobs=jobs,
        models_at_once=models_at_once,
        allow_output_changes=allow_output_changes,
        fresh=fresh,
        report_dir=Path(report_dir) if report_dir else None,
        executor=executor,
        address=address,
    )
    return _repair(models, settings, progress=progress, shard=part)


def merge(
    outs: Any,
    config: str | None = None,
    manifest: str | None = None,
    out: str = ".bisector/repair",
    allow_output_changes: bool = False,
) -> RepairSummary:
    """Join the outputs of sharded repairs (`shard="I/N"`) into one, as one unsharded run writes it."""

    check_outputs((out, "--out"))
    return _merge(load_models(config, manifest), list(outs), out, allow_output_changes=allow_output_changes)
