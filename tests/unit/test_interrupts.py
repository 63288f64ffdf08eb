"""Signals (bisector/common/interrupts.py): Ctrl-C during --apply's rename-and-note step waits for the
step, so the interrupted report never says "wrote nothing" about a file it wrote; and a signal
wherever it lands (an import, the argument parser, a command) exits with 128+N (issue 19, item 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types

import pytest

from bisector.common import interrupts
from bisector.patching.apply import apply
from bisector.patching.diff import Patch


def test_a_signal_during_the_write_is_raised_after_the_file_is_noted(tmp_path, monkeypatch) -> None:
    target = tmp_path / "net.py"
    target.write_text("a\n")
    written: list[str] = []
    real_replace = os.replace

    def replace_then_signal(src, dst):  # the signal lands right after the rename
        real_replace(src, dst)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(interrupts, "SIGNALS", [])
    previous = signal.signal(signal.SIGINT, interrupts.on_signal)
    monkeypatch.setattr("bisector.patching.apply.os.replace", replace_then_signal)
    try:
        with pytest.raises(KeyboardInterrupt):
            apply([Patch(str(target), "a\n", "b\n", "s", str(tmp_path))], tmp_path, written=written)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert target.read_text() == "b\n"
    assert written == ["net.py"]


def test_a_signal_while_the_pool_module_is_being_imported_still_interrupts(monkeypatch) -> None:
    # The module is in sys.modules from the start of its import, without terminate_all yet: the
    # handler raised AttributeError ("partially initialized module"), a traceback and exit 1.
    monkeypatch.setattr(interrupts, "SIGNALS", [])
    monkeypatch.setitem(sys.modules, "bisector.probe.pool", types.ModuleType("bisector.probe.pool"))
    with pytest.raises(KeyboardInterrupt):
        interrupts.on_signal(signal.SIGTERM, None)
    assert interrupts.received() == signal.SIGTERM


def run_main(before: str) -> subprocess.CompletedProcess[str]:
    """`bisector --version` in a child, with `before` standing in for cli.entry._main, what cli.main
    runs once its handlers are in: a signal sent from there lands outside any command's body."""
    code = (
        "import os, signal, sys, time\n"
        "from bisector import cli\nfrom bisector.cli import entry\nfrom bisector.common import interrupts\n"
        "interrupts.install_handlers()\n"
        f"def before(argv):\n{before}\n"
        "entry._main = before\n"
        "cli.main(['--version'])\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_outside_a_command_exits_with_128_plus_its_number(sig: signal.Signals) -> None:
    done = run_main(f"    os.kill(os.getpid(), {int(sig)})\n    time.sleep(5)")
    assert done.returncode == 128 + sig, done.stderr
    assert done.stderr == f"interrupted ({sig.name})\n"


def test_an_import_the_signal_cut_short_exits_with_the_signal_code_not_1() -> None:
    # A C extension's init turns the KeyboardInterrupt into "ImportError: initialization failed"
    # (onnxruntime's did): the signal, not the ImportError, is what happened.
    done = run_main(
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(5)\n"
        "    except KeyboardInterrupt:\n"
        "        raise ImportError('initialization failed')"
    )
    assert done.returncode == 143, done.stderr
    assert "Traceback" not in done.stderr and "interrupted (SIGTERM)" in done.stderr


def test_a_signal_in_a_command_before_its_body_is_not_typers_130() -> None:
    # typer turns a KeyboardInterrupt raised in a command, outside bisector's _guard, into exit
    # 130 whatever the signal was: SIGTERM and SIGHUP in the first half second exited 130.
    code = (
        "import os, signal\n"
        "from bisector import cli\nfrom bisector.cli import probing\nfrom bisector.common import interrupts\n"
        "interrupts.install_handlers()\n"
        "def options(given):\n"
        "    os.kill(os.getpid(), signal.SIGHUP)\n"
        "probing._options = options\n"
        "cli.main(['measure', 'm.py:Net', '-i', 'x=B,8', '--dim', 'B=2'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 129, done.stderr
    assert done.stderr == "interrupted (SIGHUP)\n"


def test_the_exit_code_is_the_first_signals() -> None:
    code = "\n".join(
        [
            "import os, signal",
            "from bisector import cli",
            "from bisector.cli import entry",
            "from bisector.common import interrupts",
            "interrupts.install_handlers()",
            "def before(argv):",
            "    try:",
            "        os.kill(os.getpid(), signal.SIGHUP)",
            "    finally:",  # a second signal while the first unwinds
            "        os.kill(os.getpid(), signal.SIGTERM)",
            "entry._main = before",
            "cli.main(['--version'])",
        ]
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 129, done.stderr
    assert "Traceback" not in done.stderr


def test_a_signal_a_worker_thread_takes_reaches_the_main_thread_asleep_in_a_wait() -> None:
    # Python runs handlers only in the main thread; one asleep in a lock's wait (Future.result())
    # is not woken by a signal the kernel gave another thread, so bisector slept on (issue 26).
    code = "\n".join(
        [
            "import signal, threading, time",
            "from bisector import cli",
            "from bisector.cli import entry",
            "from bisector.common import interrupts",
            "interrupts.install_handlers()",
            "def worker():",
            "    time.sleep(0.3)",  # the main thread is asleep by now
            "    signal.pthread_kill(threading.get_ident(), signal.SIGHUP)",  # the kernel's choice
            "    threading.Event().wait(30)",
            "def before(argv):",
            "    threading.Thread(target=worker, daemon=True).start()",
            "    threading.Event().wait(30)",  # as Future.result() does, while a probe runs
            "entry._main = before",
            "cli.main(['--version'])",
        ]
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 129, done.stderr
    assert time.monotonic() - started < 5
    assert done.stderr == "interrupted (SIGHUP)\n"


def test_a_signal_while_the_forwarder_thread_starts_exits_with_128_plus_n() -> None:
    # Seen under load in the start-up stress test: the handlers are in, and the signal lands
    # while Thread.start() waits for the forwarder thread; its KeyboardInterrupt escaped main()
    # as a traceback and exit -2 instead of 143.
    code = (
        "import os, signal, time\n"
        "from bisector import __main__\nfrom bisector.common import interrupts\n"
        "def start():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "interrupts._start_forwarder = start\n"
        "__main__.main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, done.stderr
    assert "Traceback" not in done.stderr and "interrupted (SIGTERM)" in done.stderr


def test_a_handled_signal_is_not_sent_on_to_a_handler_put_back_since() -> None:
    # A process that outlives a command (an xdist worker, a library caller) resets SIGNALS and puts
    # its own handler back; the forwarder, woken late, took the handled signal for a lost one and
    # sent it on to that handler: a KeyboardInterrupt that killed a pytest worker (issue 26).
    code = "\n".join(
        [
            "import os, signal, time",
            "from bisector.common import interrupts",
            "interrupts.install_handlers()",
            "for _ in range(10):",
            "    interrupts.SIGNALS = []",
            "    try:",
            "        os.kill(os.getpid(), signal.SIGINT)",
            "        time.sleep(0.01)",
            "    except KeyboardInterrupt:",
            "        pass",
            "    interrupts.SIGNALS = []",
            "    signal.signal(signal.SIGINT, signal.default_int_handler)",
            "    time.sleep(2 * interrupts.FORWARD_AFTER_S + 0.02)",
            "    signal.signal(signal.SIGINT, interrupts.on_signal)",
            "print('survived')",
        ]
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "survived\n"


def test_the_forwarder_sends_on_only_a_signal_no_handler_of_ours_ran_for() -> None:
    ours = interrupts._installed or interrupts.on_signal
    original = interrupts._installed
    interrupts._installed = ours
    try:
        wait = interrupts.FORWARD_EVERY_S
        assert interrupts.should_forward(seen=3, handled=2, current=ours, since_last_s=wait)
        assert not interrupts.should_forward(seen=3, handled=3, current=ours, since_last_s=wait)  # handled
        assert not interrupts.should_forward(seen=3, handled=2, current=signal.default_int_handler, since_last_s=wait)
        assert not interrupts.should_forward(seen=3, handled=2, current=ours, since_last_s=0.0)  # just sent one
    finally:
        interrupts._installed = original
