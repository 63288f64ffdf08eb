"""A pool shared by several models honours each model's own timeout, memory cap and --fresh
(issue 12, item 8): the pytest plugin's pool (600 s by default) and `repair`'s pool."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import FIXTURES

pytestmark = pytest.mark.probe
SPAWNERS = FIXTURES / "spawners.py"


@pytest.mark.timeout(120)  # the plugin pool's own timeout is 600 s: this must not wait for it
def test_the_plugin_pool_honours_a_models_timeout(bisector, tmp_path: Path) -> None:
    started = time.monotonic()
    report = bisector.measure(f"{SPAWNERS}:HangAndTell", ["x=B,8"], ["B=2"], stages=["eager"], timeout_s=3, retries=0)
    r = report.stages["eager"]
    assert r.kind == "crashed" and "did not finish within 3 s" in r.failure.describe()
    assert time.monotonic() - started < 60


def test_the_plugin_pool_honours_a_models_memory_cap(bisector) -> None:
    report = bisector.measure(
        f"{SPAWNERS}:HoldsMemory", ["x=B,8"], ["B=2"], stages=["eager"], mem_cap="500MB", retries=0
    )
    r = report.stages["eager"]
    assert r.kind == "crashed" and r.failure.reason == "memory-cap", r.failure


def test_the_plugin_pool_honours_fresh(bisector, tmp_path: Path) -> None:
    pidfile = tmp_path / "parent.pid"
    bisector.measure(
        f"{SPAWNERS}:TellParent",
        ["x=B,8"],
        ["B=2"],
        stages=["eager"],
        fresh=True,
        retries=0,
        init_kwargs={"pidfile": str(pidfile)},
    )
    # A fresh probe is this process's own child (or its containment supervisor's); a forked one
    # would be the probe server's.
    ancestors = [line.split(" ", 1) for line in pidfile.read_text().splitlines()]
    pids = [int(pid) for pid, _ in ancestors]
    assert os.getpid() in pids, ancestors
    assert not any("bisector.probe.server" in cmd for _, cmd in ancestors[: pids.index(os.getpid())]), ancestors


@pytest.mark.timeout(180)  # repair's pool defaults to 300 s a probe
def test_repair_honours_each_models_timeout(tmp_path: Path) -> None:
    from bisector.repairs.manifest import load_models
    from bisector.repairs.one import RepairSettings
    from bisector.repairs.run import repair

    (tmp_path / "spawners.py").write_text(SPAWNERS.read_text())
    (tmp_path / "pyproject.toml").write_text(
        '[tool.bisector]\nstages = ["eager"]\nretries = 0\n'
        '[[tool.bisector.models]]\nspec = "spawners.py:HangAndTell"\ninputs = ["x=B,8"]\ndims = ["B=2"]\ntimeout = 3\n'
    )
    started = time.monotonic()
    summary = repair(load_models(str(tmp_path / "pyproject.toml")), RepairSettings(out=tmp_path / "out", jobs=2))
    (result,) = summary.results
    assert result.status == "error" and "did not finish within 3 s" in result.error, result
    assert time.monotonic() - started < 90
