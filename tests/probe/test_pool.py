"""Whatever a child does, the parent gets a result naming it: never a hang, never a traceback."""

from __future__ import annotations

import time

import pytest

from bisector.model.schedule import ScheduleProfile, build_schedule
from bisector.model.spec import build_input_plan, parse_model_spec
from bisector.probe.pool import ProbePool
from bisector.probe.types import ProbeCrashed, ProbeFailed, ProbeOk, ProbeOptions, ProbeRequest, ProbeTimedOut
from tests.conftest import FIXTURES

pytestmark = pytest.mark.probe
TINY = ScheduleProfile(shapes=1, warmup_passes=1, repeat_passes=3, novel=0, within=0)


def request(name: str, stage: str = "eager", options: ProbeOptions = ProbeOptions(), inputs=("x=B,8",)) -> ProbeRequest:
    spec = parse_model_spec(f"{FIXTURES / 'crashers.py'}:{name}")
    plan = build_input_plan(list(inputs), ["B=2"], spec)
    return ProbeRequest(spec, plan, stage, build_schedule(plan.dims, TINY), options, label=name)


def test_a_fine_model_comes_back_with_a_curve(pool: ProbePool) -> None:
    result = pool.run(request("Fine"))
    assert isinstance(result, ProbeOk)
    assert len(result.curve.samples) == 4
    assert all(s.get("rss") and s.get("objects") is not None for s in result.curve.samples)


def test_segfault_is_reported_with_its_signal(pool: ProbePool) -> None:
    result = pool.run(request("Segfault"))
    assert isinstance(result, ProbeCrashed)
    assert result.signal == "SIGSEGV"
    assert "Fatal Python error" in result.tail or "Segmentation" in result.tail or result.tail == ""


def test_abort_is_reported(pool: ProbePool) -> None:
    result = pool.run(request("Abort"))
    assert isinstance(result, ProbeCrashed) and result.signal == "SIGABRT"


def test_nonzero_exit_is_reported(pool: ProbePool) -> None:
    result = pool.run(request("ExitThree"))
    assert isinstance(result, ProbeCrashed) and result.exit_code == 3 and result.signal is None


def test_hang_is_killed_at_the_timeout(pool: ProbePool) -> None:
    started = time.monotonic()
    result = pool.run(request("Hang"), timeout_s=3)
    assert isinstance(result, ProbeTimedOut)
    assert time.monotonic() - started < 15
    assert "3 s" in result.describe()


def test_memory_hog_is_killed_at_the_cap(pool: ProbePool) -> None:
    result = pool.run(request("Hog"), mem_cap=1_500_000_000)
    assert isinstance(result, ProbeCrashed)
    assert result.reason == "memory-cap"
    assert result.peak_rss and result.peak_rss > 1_500_000_000
    assert "memory cap" in result.describe()


def test_the_server_survives_crashes_and_serves_again(pool: ProbePool) -> None:
    pool.run(request("Segfault"))
    assert isinstance(pool.run(request("Fine")), ProbeOk)


@pytest.mark.parametrize(
    "name, where, text",
    [
        ("RaisingCtor", "load", "ValueError: width must be positive"),
        ("RaisingForward", "forward", "has no attribute 'missing_layer'"),
        ("not_a_module", "load", "returned int, not an nn.Module"),
        ("NUMBER", "load", "is int, not an nn.Module class"),
    ],
)
def test_user_code_errors_come_back_as_failures_with_their_traceback(
    pool: ProbePool, name: str, where: str, text: str
) -> None:
    result = pool.run(request(name))
    assert isinstance(result, ProbeFailed)
    assert result.where == where
    assert text in result.message
    if name in ("RaisingCtor", "RaisingForward"):
        assert "crashers.py" in result.traceback  # the user's own frame, not ours
        assert "bisector/probe" not in result.traceback


def test_a_model_that_cannot_export_fails_at_export(pool: ProbePool) -> None:
    eager = pool.run(request("NotExportable", inputs=("x=B,8,8",)))
    assert isinstance(eager, ProbeOk)
    export = pool.run(request("NotExportable", "export", inputs=("x=B,8,8",)))
    assert isinstance(export, ProbeFailed) and export.where == "export"
    assert "exporter failed" in export.message
    assert "linalg_eig" in export.message  # the cause, not the exporter's generic advice
    assert "\x1b[" not in export.message


def test_fresh_interpreters_give_the_same_kind_of_results(tmp_path) -> None:
    with ProbePool(tmp_path, fresh=True, timeout_s=120) as fresh:
        ok = fresh.run(request("Fine"))
        crash = fresh.run(request("Segfault"))
    assert isinstance(ok, ProbeOk) and len(ok.curve.samples) == 4
    assert isinstance(crash, ProbeCrashed) and crash.signal == "SIGSEGV"


def test_a_killed_server_is_restarted(tmp_path) -> None:
    import os
    import signal

    with ProbePool(tmp_path, timeout_s=120) as p:
        assert isinstance(p.run(request("Fine")), ProbeOk)
        os.kill(p._server.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        p._server.proc.wait()  # type: ignore[union-attr]
        assert isinstance(p.run(request("Fine")), ProbeOk)


def test_parallel_probes_from_threads(pool: ProbePool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(pool.run, [request("Fine") for _ in range(6)]))
    assert all(isinstance(r, ProbeOk) for r in results)


def test_a_pool_for_runs_that_never_export_loads_no_exporter_and_still_exports_when_asked(tmp_path) -> None:
    from bisector.probe.pool import exports, warms
    from bisector.probe.server import EXPORTER_ENV, startup_modules

    # Eager-only runs (find -s eager, a repair whose models list only eager) start a lean server.
    assert not exports(["eager"]) and exports(["eager", "inference"]) and exports(("export",)) and exports(None)
    # The warm-up export is made for export stages with torch's default exporter only.
    assert warms(["eager", "export"]) and warms(None) and warms(("export",), "dynamo")
    assert not warms(["eager", "inference"]) and not warms(["export"], "torchscript")
    lean = startup_modules({EXPORTER_ENV: "0", "BISECTOR_PRELOAD": "transformers"})
    assert "torch" in lean and "transformers" in lean
    assert not {"onnx", "onnxruntime", "onnxscript", "torch.onnx"} & set(lean)
    assert {"onnx", "onnxruntime", "torch.onnx"} <= set(startup_modules({}))
    with ProbePool(tmp_path / "lean", exporter=False) as pool:
        assert pool.env is not None and pool.env[EXPORTER_ENV] == "0"
        eager = pool.run(request("Fine"))
        # A probe that exports after all (an equivalence through ONNX) imports the exporter itself.
        exported = pool.run(request("Fine", stage="export", options=ProbeOptions(exporter="torchscript")))
        assert pool.server_info()["warm_export_s"] == 0  # no exporter loaded, none warmed
    assert isinstance(eager, ProbeOk) and isinstance(exported, ProbeOk), (eager, exported)


def test_the_server_warms_the_exporter_once_and_forks_single_threaded(pool: ProbePool) -> None:
    import torch

    # A CUDA build never warms: a driver initialised before fork would break the CUDA probes.
    cuda_build = bool(torch.version.cuda or getattr(torch.version, "hip", None))
    got = pool.run(request("Fine", stage="export"))
    info = pool.server_info()
    assert isinstance(got, ProbeOk) and len(got.curve.samples) == 4, got
    assert info["threads"] == 1  # tqdm's monitor kept off: the server forks single-threaded
    assert not info["failed"], info["failed"]
    assert (info["warm_export_s"] > 0) != cuda_build
