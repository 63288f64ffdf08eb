"""Ctrl-C during --apply's rename-and-note step waits for the step (bisector/interrupts.py), so
the interrupted report never says "wrote nothing" about a file it wrote."""

from __future__ import annotations

import os
import signal

import pytest

from bisector import cli
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

    monkeypatch.setattr(cli, "_SIGNALS", [])
    previous = signal.signal(signal.SIGINT, cli._on_signal)
    monkeypatch.setattr("bisector.patching.apply.os.replace", replace_then_signal)
    try:
        with pytest.raises(KeyboardInterrupt):
            apply([Patch(str(target), "a\n", "b\n", "s", str(tmp_path))], tmp_path, written=written)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert target.read_text() == "b\n"
    assert written == ["net.py"]
