"""Inside a child process: run one ProbeRequest and write its result as JSON.

Entry points: ``run_dir`` (called in a child forked by the probe server) and
``python -m bisector.probe.child DIR`` (a fresh interpreter, ``--fresh``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from bisector.model.curve import MemoryCurve
from bisector.patching.settings import varying_axes
from bisector.probe.inputs import InputFactory
from bisector.probe.loading import WorkloadError, build_model, load_namespace, one_line, user_traceback
from bisector.probe.types import ProbeFailed, ProbeKind, ProbeOk, ProbeRequest, ProbeResult


def _silent_showwarning(*args: Any, **kwargs: Any) -> None:
    """Shows nothing: the warning has already gone through the filters and the registries."""


def _quiet() -> None:
    # Exporter chatter and deprecation warnings would bury the lines that explain a crash. Only
    # the output is silenced: a blanket "ignore" filter would also stop the user's warnings from
    # filling their module's __warningregistry__ (one entry per distinct message under the
    # default action), a growth the probe must see as the user's. Warnings raised from the
    # toolchain's own code stay ignored, so its registries are not the model's.
    warnings.showwarning = _silent_showwarning
    warnings.filterwarnings("ignore", module=r"(torch|torchvision|onnx\w*|numpy)(\.|$)")
    for name in ("torch", "torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TORCH_LOGS", "-all")


def _control_module() -> Any:
    import torch

    class BisectorControl(torch.nn.Module):
        """The trivial control: touches every tensor input once, keeps nothing."""

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            from torch.utils import _pytree as pytree

            leaves = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            return tuple(torch.relu(t.float()) for t in leaves)

    return BisectorControl()


def run_request(req: ProbeRequest, workdir: Path) -> ProbeResult:
    started = time.perf_counter()
    _quiet()
    torch = _settle(req)
    if req.kind == ProbeKind.NOOP:  # measures the cost of starting a probe, nothing else
        return ProbeOk(curve=MemoryCurve(samples=()), wall_s=time.perf_counter() - started)

    meta: dict[str, Any] = {
        "torch": torch.__version__,
        "device": req.options.device,
        "threads": torch.get_num_threads(),
    }
    try:
        device = _device(req, meta)
        namespace, model = _load(req, device)
        factory = InputFactory(req.plan, namespace, device, req.schedule.seed)
        if req.kind == ProbeKind.EQUIVALENCE:
            from bisector.probe.equivalence import run_equivalence

            data = run_equivalence(req, model, namespace, device, workdir)
            return ProbeOk(curve=MemoryCurve(samples=()), wall_s=time.perf_counter() - started, data=data)
        if req.kind == ProbeKind.EXPORT_FILE:
            from bisector.probe.export import export_for_inference

            began = time.perf_counter()
            _export_file(req, _targets(req, model, factory)[0], export_for_inference)
            data = {"path": req.exported, "export_s": round(time.perf_counter() - began, 3)}
            return ProbeOk(curve=MemoryCurve(samples=()), wall_s=time.perf_counter() - started, data=data)
        if req.kind == ProbeKind.CAPTURE:
            from bisector.probe.regions import run_capture

            data = run_capture(model, req, factory, Path(req.capture or (workdir / "capture")))
            return ProbeOk(curve=MemoryCurve(samples=()), wall_s=time.perf_counter() - started, data=data)
        curve = _run_stage(req, model, _targets(req, model, factory), device, meta, workdir)
    except WorkloadError as exc:
        return ProbeFailed(where=exc.where, message=exc.message, traceback=exc.tb, wall_s=time.perf_counter() - started)
    return ProbeOk(curve=curve, wall_s=time.perf_counter() - started)


def _export_file(req: ProbeRequest, target: Any, export: Any) -> None:
    """The inference stage's export written where req.exported says, whole or not at all: into a
    folder beside it, renamed into place (the graph and its external data file together), so no
    probe ever loads half a file."""
    import shutil

    final = Path(req.exported).parent
    tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if not export(target, req.schedule, req.options, tmp / Path(req.exported).name):
            raise WorkloadError("export", "the model gets no input at the schedule's largest step: nothing to export")
        if final.exists():
            shutil.rmtree(final)  # a folder made before a failed rename; the same export
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _settle(req: ProbeRequest) -> Any:
    """Freeze what exists before the user's code, seed every generator, set the threads and the
    toolchain's environment; returns torch."""
    import gc

    import torch

    # Objects that exist before the user's code runs are frozen out of the collector: a full
    # collection then costs microseconds instead of ~0.2 s, and only new objects are counted.
    # (The probe server freezes before forking; this makes a fresh interpreter match it.)
    gc.collect()
    gc.freeze()
    # The probe's own modules load before the user's code does (a forked probe's server has them).
    from bisector.probe import loop, meters, stages, targets  # noqa: F401

    seed = req.schedule.seed
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:
        pass
    if req.options.threads:
        torch.set_num_threads(req.options.threads)
    # Read by the toolchain when its cache is first built (oneDNN's, at the first convolution):
    # set before the model runs, in this child only.
    os.environ.update(req.options.env)
    return torch


def _device(req: ProbeRequest, meta: dict[str, Any]) -> str:
    """The device the probe runs on ("auto": CUDA where torch sees one), noted in meta."""
    import torch

    device = req.options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        meta["device"] = device
    if device == "cuda" and not torch.cuda.is_available():
        raise WorkloadError("load", "--device cuda was asked for but torch sees no CUDA device")
    return device


def _load(req: ProbeRequest, device: str) -> tuple[Any, Any]:
    """The user's namespace (None for the control without a hook) and the model, in eval mode on
    the device."""
    namespace = load_namespace(req.model) if (not req.control or req.plan.use_hook) else None
    model = _control_module() if req.control else build_model(req.model, namespace)
    try:
        model.eval()
        if device != "cpu":
            model.to(device)
    except Exception as exc:  # noqa: BLE001
        raise WorkloadError(
            "load", f"moving the model to {device} failed: {one_line(exc)}", user_traceback(exc)
        ) from None
    return namespace, model


def _targets(req: ProbeRequest, model: Any, factory: InputFactory) -> list[Any]:
    """What the stage runs: the regions asked for (one group in export and inference), else the
    whole model."""
    from bisector.probe.targets import Target

    if req.regions != ("",) or req.capture:
        from bisector.probe.regions import group_target, region_targets

        targets = region_targets(model, req, factory)
        if len(targets) > 1 and req.stage in ("export", "inference"):
            targets = [group_target(targets)]
        return targets
    symbols = None
    names = None
    if not req.plan.use_hook:
        names = [i.name for i in req.plan.inputs]
        symbols = varying_axes(req.plan)
    return [
        Target(
            name="",
            module=model,
            calls=lambda i, step: [factory.make(i, step.dims)],
            input_names=names,
            symbols=symbols,
        )
    ]


def _run_stage(
    req: ProbeRequest, model: Any, targets: list[Any], device: str, meta: dict[str, Any], workdir: Path
) -> MemoryCurve:
    """The stage's loop over the targets, measured."""
    from bisector.judge.owners import project_roots
    from bisector.probe.loop import Context
    from bisector.probe.meters import Meters
    from bisector.probe.stages import STAGE_RUNNERS

    # ONNX Runtime's memory is judged as users see it: freed memory glibc keeps (with the
    # arena off, say) still counts. In torch stages the C heap is trimmed before reading,
    # so the allocator's high-water mark is not taken for growth (see meters.py).
    meters = Meters(device=device, tracemalloc=req.options.tracemalloc, trim=req.stage != "inference")
    try:
        ctx = Context(
            schedule=req.schedule,
            targets=targets,
            meters=meters,
            options=req.options,
            workdir=workdir,
            device=device,
            meta=meta,
            owner_roots=project_roots(req.model.path),
            model=None if req.control else model,
            stage=req.stage or "",
            exported=req.exported if req.stage == "inference" else "",
        )
        if req.stage == "inference":
            import onnxruntime

            meta["onnxruntime"] = onnxruntime.__version__
        return STAGE_RUNNERS[req.stage](ctx)
    finally:
        meters.close()


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def run_dir(request_dir: str, threads: int | None = None) -> int:
    folder = Path(request_dir)
    req = ProbeRequest.from_json(json.loads((folder / "request.json").read_text()))
    if threads and not req.options.threads:
        from dataclasses import replace

        req = req.with_(options=replace(req.options, threads=threads))
    try:
        result = run_request(req, folder)
    except Exception as exc:  # noqa: BLE001 - a bug of ours; still a result, never a hang
        result = ProbeFailed(
            where="internal", message=f"bisector failed inside the probe: {one_line(exc)}", traceback=_full_tb(exc)
        )
    _write_atomic(folder / "result.json", result.to_json())
    from bisector.probe.procs import kill_descendants

    kill_descendants()  # what the model started and left running ends with the probe
    return 0


def _full_tb(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]


def die_with_parent(parent: int | None) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (PR_SET_PDEATHSIG), so a
    probe never outlives bisector, even one killed with SIGKILL; and exit now if the parent is
    already gone (it died before the request reached the kernel). Linux only; a no-op elsewhere."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        # 36 = PR_SET_CHILD_SUBREAPER: a process the model daemonizes (setsid, then its parent
        # exits) is re-parented to this probe instead of to init, so it stays in the probe's
        # tree, where the memory cap counts it and the pool kills it when the probe ends.
        libc.prctl(36, 1, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:
        os._exit(70)


def main(argv: list[str] | None = None) -> int:
    parent = os.environ.pop("BISECTOR_PARENT_PID", "")
    die_with_parent(int(parent) if parent.isdigit() else None)
    args = list(sys.argv[1:] if argv is None else argv)
    threads = None
    for a in list(args):
        if a.startswith("--threads="):
            threads = int(a.split("=", 1)[1])
            args.remove(a)
    if len(args) != 1:
        print("usage: python -m bisector.probe.child REQUEST_DIR [--threads=N]", file=sys.stderr)
        return 2
    return run_dir(args[0], threads=threads)


if __name__ == "__main__":
    sys.exit(main())
