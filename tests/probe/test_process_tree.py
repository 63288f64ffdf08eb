"""Limits cover the probe's whole process tree (issue 12, item 4): a helper process the forward
starts counts against the memory cap and is killed with the probe, and whatever the forward
leaves running is killed when the probe ends. Real processes, nothing mocked."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from bisector.model.schedule import ScheduleProfile, build_schedule
from bisector.model.spec import build_input_plan, parse_model_spec
from bisector.probe.pool import ProbePool
from bisector.probe.types import ProbeCrashed, ProbeOk, ProbeRequest
from tests.conftest import FIXTURES

pytestmark = pytest.mark.probe
TINY = ScheduleProfile(shapes=1, warmup_passes=1, repeat_passes=3, novel=0, within=0)


def request(name: str, **init: object) -> ProbeRequest:
    spec = parse_model_spec(f"{FIXTURES / 'spawners.py'}:{name}", init)
    plan = build_input_plan(["x=B,8"], ["B=2"], spec)
    return ProbeRequest(spec, plan, "eager", build_schedule(plan.dims, TINY), label=name)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_helper_process_over_the_cap_kills_the_probe_and_the_helper(pool: ProbePool, tmp_path: Path) -> None:
    # The probe itself holds ~300 MB, well under the 700 MB cap; its helper adds 600 MB.
    pidfile = tmp_path / "helper.pid"
    started = time.monotonic()
    result = pool.run(request("HungryHelper", pidfile=str(pidfile), mb=600), mem_cap=700_000_000, timeout_s=60)
    assert isinstance(result, ProbeCrashed), result
    assert result.reason == "memory-cap"
    assert result.peak_rss and result.peak_rss > 700_000_000
    assert time.monotonic() - started < 15  # not the helper's 20 s wait
    assert gone_within(int(pidfile.read_text()), 2)


@pytest.mark.parametrize(
    "model, fresh",
    [("StraySleep", False), ("StraySleep", True), ("DaemonSleep", False)],
    ids=["server", "fresh", "daemonized"],
)
def test_a_process_the_forward_leaves_running_ends_with_the_probe(
    pool: ProbePool, tmp_path: Path, model: str, fresh: bool
) -> None:
    pidfile = tmp_path / "sleep.pid"
    result = pool.run(request(model, pidfile=str(pidfile)), fresh=fresh)
    assert isinstance(result, ProbeOk), result
    pid = int(pidfile.read_text())
    assert gone_within(pid, 2), f"sleep 600 (pid {pid}) outlived its probe"
