from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


# Every process this session starts carries this variable: the check at the end finds any that
# is still running (probe servers, probes, what their models started) by it, and no one else's.
SESSION_MARK = "BISECTOR_TEST_SESSION"


@pytest.hookimpl(trylast=True)  # after pytest's tmp_path plugin has set up its factory
def pytest_configure(config: pytest.Config) -> None:
    import signal
    import tempfile
    import uuid

    # The Ctrl-C tests play a user at a terminal. Run as a background job of a non-interactive
    # shell (`make test &`), pytest starts with SIGINT ignored, every child inherits that, and
    # bisector rightly keeps an ignored signal ignored: restore the terminal's default first.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # Likewise SIGHUP and SIGTERM: under `nohup make test` (or a runner that ignores them) the
    # signal tests would send a signal every bisector they start ignores, and wait for nothing.
    for sig in (signal.SIGHUP, signal.SIGTERM):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)

    # The session's temporary folders (bisector-* from probe pools included) go in a folder of
    # its own, so the check at the end sees this run's leftovers, not those of another run on the
    # same machine. pytest's own tmp_path folders stay where they always are.
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        factory.getbasetemp()
    # An xdist worker makes its folder beside the controller's, not inside it: Ray's socket paths
    # under a nested folder pass the 107 bytes AF_UNIX allows.
    if hasattr(config, "workerinput"):
        base = os.environ.get(_TMP_BASE) or None
    else:
        base = os.environ[_TMP_BASE] = tempfile.gettempdir()
    private = tempfile.mkdtemp(prefix="pytest-bisector-tmp-", dir=base)
    os.environ["TMPDIR"] = private
    tempfile.tempdir = None  # read TMPDIR again
    config.stash[_TMP_KEY] = private
    os.environ[SESSION_MARK] = uuid.uuid4().hex  # new in every session, a nested one too
    # Traced probes without native stacks (memray adds ~7 s and a 2-4x slowdown to each): the suite
    # stays within its time; tests/probe/test_native_stacks.py turns them on for its own pool.
    os.environ.setdefault("BISECTOR_NATIVE_STACKS", "0")
    # One control cache for the whole session: tests share control runs, never the user's cache.
    if "BISECTOR_CACHE" not in os.environ:
        os.environ["BISECTOR_CACHE"] = tempfile.mkdtemp(prefix="control-cache-")


# The longest files, longest first (per-file sums of `--durations=0` on 2 cores, December 2026):
# `make test` deals whole files to two workers in collection order, and a long file dealt last
# keeps one worker busy while the other has nothing left (the zoo, the longest, is last of
# tests/e2e/ by name). Every other file keeps its place after these, tests/e2e/ first and the
# quick unit files last, to fill the workers' ends.
LONGEST_FIRST = (
    "e2e/test_zoo_find.py",
    "e2e/test_repair_project.py",
    "e2e/test_fleet.py",
    "e2e/test_fix.py",
    "e2e/test_reports.py",
    "e2e/test_registry_project.py",
    "e2e/test_repair_batch.py",
)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deal the longest files first. A stable sort by file: each file's tests stay together and
    in their order (module-scoped fixtures are built once)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    here = Path(__file__).resolve().parent

    def key(item: pytest.Item) -> int:
        try:
            name = item.path.resolve().relative_to(here).as_posix()
        except ValueError:  # a test outside tests/ (pytester's own): where it was
            return len(rank)
        return rank.get(name, len(rank))

    items.sort(key=key)


_TMP_KEY = pytest.StashKey[str]()
_TMP_BASE = "BISECTOR_TEST_TMP_BASE"  # where the xdist controller made its own folder


def _marked_processes(mark: str) -> list[int]:
    needle = f"{SESSION_MARK}={mark}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as fh:
                zombie = fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except OSError:
            continue
        if needle in env and not zombie:
            found.append(int(name))
    return found


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any process it started is still running, or any bisector-* temporary
    folder is left (issue 12): the suite's own proof that probes never outlive bisector."""
    import shutil
    import signal
    import time

    if not sys.platform.startswith("linux"):
        return
    mark = os.environ.get(SESSION_MARK, "")
    private = Path(session.config.stash.get(_TMP_KEY, ""))
    deadline = time.monotonic() + 5  # a server closing or a probe being reaped right now
    while True:
        stray = _marked_processes(mark) if mark else []
        dirs = sorted(private.glob("bisector-*")) if private.name else []
        if not (stray or dirs) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    problems = []
    for pid in stray:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        problems.append(f"process {pid} still running after the suite: {cmd[:200]}")
    problems += [f"temporary folder left after the suite: {d}" for d in dirs]
    if private.name:
        cache = os.environ.get("BISECTOR_CACHE", "")
        if cache.startswith(str(private)):
            shutil.rmtree(cache, ignore_errors=True)
        if not problems:
            shutil.rmtree(private, ignore_errors=True)
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        text = "bisector leftovers:\n  " + "\n  ".join(problems)
        if reporter is not None:
            reporter.write_line(text, red=True)
        else:
            sys.stderr.write(text + "\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory):
    """One probe server for the session, preloading what every sample model imports (the
    Hugging Face samples' transformers costs ~7 s per probe otherwise)."""
    from bisector.model.spec import library_imports, parse_model_spec
    from bisector.model.zoo import zoo
    from bisector.probe.pool import ProbePool

    preload: list[str] = []
    for truth in zoo(SAMPLES):
        preload += library_imports(parse_model_spec(truth.target))
    with ProbePool(tmp_path_factory.mktemp("pool"), timeout_s=300, preload=tuple(dict.fromkeys(preload))) as p:
        yield p


def has_cuda() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:  # noqa: BLE001 - no driver means no GPU here
        return False


def run_cli(*args: str, cwd: str | Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:

    from tests.contract import check_cli_output

    r = subprocess.run(
        [sys.executable, "-m", "bisector", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )
    check_cli_output(args, r.stdout)  # every report a test makes is checked against the JSON contract
    return r
