"""A crashed probe's folder is kept under the run directory with its output capped: head and tail
(issue 19, item 8d; 100 MB of stderr was once kept whole)."""

from __future__ import annotations

from pathlib import Path

from bisector.lab.runner import LOG_HEAD, LOG_TAIL, Events, Runner
from bisector.probe.types import ProbeCrashed


def test_a_flooded_stderr_is_kept_as_head_and_tail(tmp_path: Path) -> None:
    probe = tmp_path / "probe-1"
    probe.mkdir()
    (probe / "request.json").write_text('{"stage": "eager"}')
    flood = b"HEAD" + b"m" * (8 * 1024 * 1024) + b"TAIL"
    (probe / "stderr.txt").write_bytes(flood)
    (probe / "stdout.txt").write_bytes(b"short\n")
    runner = Runner(pool=None, jobs=1, cache=None, events=Events())  # type: ignore[arg-type]
    try:
        runner.keep_failed_in = tmp_path / "run" / "failed-probes"
        kept = runner._keep(ProbeCrashed("signal", "SIGSEGV", None, "tail", probe_dir=str(probe)))
    finally:
        runner.executor.shutdown()
    folder = Path(kept.probe_dir)
    assert folder.parent == tmp_path / "run" / "failed-probes"
    err = (folder / "stderr.txt").read_bytes()
    assert len(err) < LOG_HEAD + LOG_TAIL + 200
    assert err.startswith(b"HEAD") and err.endswith(b"TAIL")
    assert f"left out {len(flood) - LOG_HEAD - LOG_TAIL} bytes".encode() in err
    assert (folder / "stdout.txt").read_bytes() == b"short\n"  # small output: whole
    assert (folder / "request.json").read_text() == '{"stage": "eager"}'
