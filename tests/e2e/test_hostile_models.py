"""The hostile-model suite (issue 19): models and commands that try to leave bisector's limits.
A forward whose helper calls setsid() and forks again and then dies (os._exit, a segfault), a
daemon started at import (by the input-inference child, the probes and the bundle child), a
stdout flood, and a check command that backgrounds a child. Each runs under each containment
mechanism this machine has (a cgroup v2, the subreaper supervisor).

At its end the suite checks that no process it started is alive (every one carries a mark in its
environment) and that it left no temporary folder and no cgroup behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bisector.find import infer_inputs
from bisector.fix.project_check import run_check
from bisector.model.schedule import ScheduleProfile, build_schedule
from bisector.model.spec import build_input_plan, parse_model_spec
from bisector.probe import containment
from bisector.probe.pool import ProbePool
from bisector.probe.types import ProbeCrashed, ProbeOk, ProbeRequest
from tests.conftest import FIXTURES

pytestmark = pytest.mark.probe
HOSTILE = FIXTURES / "hostile.py"
MARK = "BISECTOR_HOSTILE_SUITE"
DAEMON = "BISECTOR_HOSTILE_DAEMON"
TINY = ScheduleProfile(shapes=1, warmup_passes=1, repeat_passes=2, novel=0, within=0)


@dataclass(frozen=True)
class Suite:
    folder: Path
    mark: str


def _marked(mark: str) -> list[int]:
    needle = f"{MARK}={mark}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state != b"Z":
            found.append(int(name))
    return found


def _boxes() -> list[Path]:
    parent = containment._STATE.get("parent")
    return sorted(parent.glob("box-*")) if isinstance(parent, Path) and parent.exists() else []


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.iterdir())
    folder = Path(tempfile.mkdtemp(prefix="hostile-suite-"))
    mark = uuid.uuid4().hex
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MARK, mark)  # inherited by everything the suite starts, however far down
        yield Suite(folder, mark)
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    deadline = time.monotonic() + 5  # a box being emptied right now
    while (_marked(mark) or _boxes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    stray = _marked(mark)
    for pid in stray:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    # bisector's folders (probe pools, check shadows) and the suite's own; torch's caches are not ours.
    left = sorted(str(p) for p in set(tmp.iterdir()) - before if p.name.startswith(("bisector", "hostile-suite")))
    boxes = _boxes()
    assert not stray, f"processes the hostile suite started are still alive: {stray}"
    assert not left, f"temporary folders left by the hostile suite: {left}"
    assert not boxes, f"cgroups left by the hostile suite: {boxes}"


@pytest.fixture(scope="module")
def hostile_pool(suite: Suite) -> Iterator[ProbePool]:
    with ProbePool(timeout_s=60) as p:  # its own temporary folder: the suite checks it goes
        yield p


MECHANISMS = [containment.CGROUP, containment.SUBREAPER]


@pytest.fixture(params=MECHANISMS)
def mechanism(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, suite: Suite) -> Iterator[str]:
    monkeypatch.setenv(containment.ENV, request.param)
    containment._reset_for_tests()
    if containment.mechanism() != request.param:
        pytest.skip(f"no {request.param} containment on this machine")
    yield request.param
    containment._reset_for_tests()


def probe(name: str, **init: object) -> ProbeRequest:
    spec = parse_model_spec(f"{HOSTILE}:{name}", init)
    plan = build_input_plan(["x=B,8"], ["B=2"], spec)
    return ProbeRequest(spec, plan, "eager", build_schedule(plan.dims, TINY), label=name)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def daemon_pids(prefix: Path) -> list[int]:
    return [int(p.read_text()) for p in prefix.parent.glob(prefix.name + ".*") if not p.name.endswith(".tmp")]


# -- item 2: a setsid grandchild of a probe that dies abnormally ---------------------------------


@pytest.mark.parametrize(
    "fresh, then", [(False, "exit"), (False, "segv"), (True, "exit")], ids=["server-exit", "server-segv", "fresh-exit"]
)
def test_a_setsid_grandchild_dies_with_a_probe_that_dies_abnormally(
    hostile_pool: ProbePool, suite: Suite, mechanism: str, fresh: bool, then: str
) -> None:
    pidfile = suite.folder / f"grandchild-{mechanism}-{fresh}-{then}.pid"
    result = hostile_pool.run(probe("SetsidGrandchild", pidfile=str(pidfile), then=then), fresh=fresh)
    assert isinstance(result, ProbeCrashed), result
    assert result.reason == ("signal" if then == "segv" else "exit"), result
    pid = int(pidfile.read_text())
    assert gone_within([pid], 3), f"the setsid grandchild (pid {pid}) outlived its probe ({mechanism}, {then})"


def test_the_memory_cap_counts_a_setsid_grandchild(hostile_pool: ProbePool, suite: Suite, mechanism: str) -> None:
    pidfile = suite.folder / f"hungry-{mechanism}.pid"
    result = hostile_pool.run(
        probe("SetsidGrandchild", pidfile=str(pidfile), then="sleep", mb=700), mem_cap=800_000_000, timeout_s=60
    )
    assert isinstance(result, ProbeCrashed) and result.reason == "memory-cap", result
    assert gone_within([int(pidfile.read_text())], 3)


def test_a_stdout_flood_in_forward_is_a_result(hostile_pool: ProbePool, mechanism: str) -> None:
    result = hostile_pool.run(probe("Flood", mb=4), timeout_s=60)
    assert isinstance(result, ProbeOk), result


# -- item 3: the inference child, the bundle child, the check command ---------------------------


def test_a_daemon_started_at_import_neither_holds_up_inference_nor_outlives_it(
    suite: Suite, mechanism: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = suite.folder / f"infer-daemon-{mechanism}"
    monkeypatch.setenv(DAEMON, str(prefix))
    started = time.monotonic()
    found = infer_inputs.infer(parse_model_spec(f"{HOSTILE}:Plain"), timeout_s=40)
    took = time.monotonic() - started
    assert found.inputs and found.inputs[0].startswith("x="), found
    assert took < 30, f"inference waited {took:.1f} s for the daemon's pipes"
    pids = daemon_pids(prefix)
    assert pids, "the model's daemon never started"
    assert gone_within(pids, 3), f"the import-time daemon outlived the inference child ({mechanism})"


def test_a_check_that_backgrounds_a_child_returns_at_once_and_the_child_goes(suite: Suite, mechanism: str) -> None:
    project = suite.folder / f"project-{mechanism}"
    project.mkdir()
    (project / "m.py").write_text("x = 1\n")
    pidfile = suite.folder / f"check-{mechanism}.pid"
    started = time.monotonic()
    ok, why = run_check(project, f"sleep 300 & echo $! > {pidfile}; echo started", [], timeout=60)
    assert ok, why
    assert time.monotonic() - started < 10
    assert gone_within([int(pidfile.read_text())], 3)


def test_a_check_over_its_timeout_is_stopped_with_all_it_started(suite: Suite, mechanism: str) -> None:
    project = suite.folder / f"slow-project-{mechanism}"
    project.mkdir()
    pidfile = suite.folder / f"slow-check-{mechanism}.pid"
    started = time.monotonic()
    ok, why = run_check(project, f"setsid sleep 300 & echo $! > {pidfile}; yes", [], timeout=2)
    assert not ok and "did not finish in 2 s" in why, why
    assert time.monotonic() - started < 10  # `yes` floods stdout meanwhile: bounded, never awaited
    assert gone_within([int(pidfile.read_text())], 3)


def test_sigterm_during_a_check_kills_what_it_started(suite: Suite, mechanism: str) -> None:
    project = suite.folder / f"term-project-{mechanism}"
    project.mkdir()
    pidfile = suite.folder / f"term-check-{mechanism}.pid"
    # bisector's own SIGTERM handler (cli._on_signal): terminate_all, then unwind as Ctrl-C does.
    code = (
        "import signal, sys\n"
        "from pathlib import Path\n"
        "from bisector.probe import pool\n"
        "from bisector.fix.project_check import run_check\n"
        "def stop(*_):\n"
        "    pool.terminate_all()\n"
        "    raise KeyboardInterrupt\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "try:\n"
        f"    run_check(Path({str(project)!r}), 'sleep 300 & echo $! > {pidfile}; wait', [], timeout=60)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(143)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 143
    assert gone_within([int(pidfile.read_text())], 3), "sleep 300 outlived bisector's SIGTERM"


def test_find_with_no_input_and_a_bundle_waits_for_no_daemon_and_leaves_none(suite: Suite) -> None:
    """The issue's own command, end to end: `find` with no --input (the inference child), its
    probes and --bundle (the bundle child) all import a model that starts a daemon."""
    prefix = suite.folder / "cli-daemon"
    out = suite.folder / "cli"
    env = {**os.environ, DAEMON: str(prefix)}
    started = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "bisector", "find", f"{HOSTILE}:Plain", "-s", "eager", "--json", "--no-cache"]
        + ["--timeout", "45", "--mem-cap", "2GB", "--run-dir", str(out / "run"), "--bundle", str(out / "bundle")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["verdict"] == "clean"
    assert list((out / "bundle").glob("*/repro.py")), r.stderr[-2000:]
    pids = daemon_pids(prefix)
    assert len(pids) >= 3, pids  # the inference child, the probe(s), the bundle child
    assert gone_within(pids, 3), "a daemon started at import outlived bisector"
    # A child left waiting on a daemon's pipes would run into its 45 s timeout and fail the run.
    assert took < 90, f"find took {took:.1f} s"
