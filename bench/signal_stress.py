"""A signal at any moment of bisector's start-up ends it at once, with 128+N, leaving nothing behind.

    python bench/signal_stress.py [--moments 20] [--span 5] [--signals INT,TERM,HUP] [--modes server,fresh]
                                  [--stacks]

For each signal, each probe mode (the probe server, --fresh) and each of --moments moments spread
evenly over the first --span seconds (0, span/n, 2*span/n, ...), runs `bisector measure` on a
model whose forward hangs (tests/fixtures/spawners.py:HangAndTell, --timeout 200), sends the
signal at that moment, and checks:
- bisector ends within 3 s of the signal,
- with exit code 128+N (a run killed by the signal itself, before Python could install a handler,
  counts: its parent's shell sees the same 128+N), and no traceback on stderr,
- no process it started is left (every process carries a marker in its environment, so a probe
  that left bisector's process group or tree is found too),
- no temporary folder is left (each run has its own TMPDIR, checked for bisector-*).

Prints one row per run and a summary; exits 1 if any run failed. --stacks runs bisector with
faulthandler registered on SIGUSR1 and, for a run still alive after the deadline, prints every
thread's stack before killing it: what the process was doing when it ignored the signal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HANG = f"{ROOT / 'tests' / 'fixtures' / 'spawners.py'}:HangAndTell"
DEADLINE_S = 3.0
TAG = "BISECTOR_SIGNAL_STRESS"
# The console script's own code (bisector.__main__:main), with faulthandler on SIGUSR1 first.
WITH_STACKS = (
    "import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1, all_threads=True); "
    "sys.argv[0] = 'bisector'; from bisector.__main__ import main; main()"
)


@dataclass(frozen=True)
class Outcome:
    sig: signal.Signals
    fresh: bool
    moment: float
    returncode: int | None  # None: still running at the deadline (then killed)
    took: float
    left_processes: tuple[str, ...]
    left_folders: tuple[str, ...]
    traceback: bool
    stderr_tail: str

    @property
    def exit_ok(self) -> bool:
        return self.returncode in (128 + self.sig, -self.sig)

    @property
    def ok(self) -> bool:
        return (
            self.returncode is not None
            and self.took <= DEADLINE_S
            and self.exit_ok
            and not self.left_processes
            and not self.left_folders
            and not self.traceback
        )


def tagged_processes(tag: str) -> list[str]:
    """Live processes whose environment carries the run's marker: "pid command"."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if f"{TAG}={tag}".encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie is already dead, only not yet reaped
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name} {cmdline[:80]}")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def command(fresh: bool, stacks: bool) -> list[str]:
    script = Path(sys.executable).parent / "bisector"  # the console script, as users run it
    if stacks:
        entry = [sys.executable, "-c", WITH_STACKS]
    else:
        entry = [str(script)] if script.exists() else [sys.executable, "-m", "bisector"]
    args = ["measure", HANG, "--input", "x=B,8", "--dim", "B=2", "--stage", "eager", "--timeout", "200"]
    return entry + args + (["--fresh"] if fresh else [])


def run_once(sig: signal.Signals, fresh: bool, moment: float, stacks: bool = False) -> Outcome:
    tag = uuid.uuid4().hex
    work = Path(tempfile.mkdtemp(prefix="signal-stress-"))
    tmp = work / "tmp"
    tmp.mkdir()
    try:
        proc = subprocess.Popen(
            command(fresh, stacks),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=work,
            env={**os.environ, "TMPDIR": str(tmp), TAG: tag},
        )
        time.sleep(moment)
        sent = time.monotonic()
        proc.send_signal(sig)
        returncode: int | None
        try:
            _, err = proc.communicate(timeout=DEADLINE_S)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = None
        took = time.monotonic() - sent
        if returncode is None:  # hung: say where, then give it what the deadline allows
            if stacks:
                proc.send_signal(signal.SIGUSR1)
                time.sleep(1)
            try:
                _, err = proc.communicate(timeout=10)
                returncode = None  # it did end, but late: still a failure
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
        # A probe killed by bisector is gone at once; one reparented to init may take a moment.
        left: list[str] = []
        for _ in range(20):
            left = tagged_processes(tag)
            if not left:
                break
            time.sleep(0.05)
        for line in left:  # leave nothing behind ourselves either
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except OSError:
                pass
        folders = tuple(p.name for p in tmp.glob("bisector-*"))
        return Outcome(
            sig, fresh, moment, returncode, took, tuple(left), folders, "Traceback" in err, err.strip()[-4000:]
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def describe(o: Outcome) -> str:
    code = "hung" if o.returncode is None else str(o.returncode)
    if o.returncode is not None and o.returncode < 0:
        code += f" (killed by {signal.Signals(-o.returncode).name})"
    mode = "fresh" if o.fresh else "server"
    row = f"{o.sig.name:<8} {mode:<6} {o.moment:5.2f} s  exit {code:<24} {o.took:5.2f} s  "
    problems = []
    if o.returncode is not None and not o.exit_ok:
        problems.append(f"expected {128 + o.sig}")
    if o.took > DEADLINE_S:
        problems.append(f"over {DEADLINE_S:.0f} s")
    if o.left_processes:
        problems.append(f"left {len(o.left_processes)} process(es): {'; '.join(o.left_processes)}")
    if o.left_folders:
        problems.append(f"left {', '.join(o.left_folders)}")
    if o.traceback:
        problems.append("traceback")
    return row + ("ok" if not problems else "FAIL " + ", ".join(problems))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moments", type=int, default=20)
    ap.add_argument("--span", type=float, default=5.0)
    ap.add_argument("--signals", default="INT,TERM,HUP")
    ap.add_argument("--modes", default="server,fresh")
    ap.add_argument("--stacks", action="store_true", help="dump every thread's stack of a run that hangs")
    args = ap.parse_args()
    sigs = [signal.Signals[f"SIG{s.strip().upper().removeprefix('SIG')}"] for s in args.signals.split(",")]
    modes = [m.strip() == "fresh" for m in args.modes.split(",")]
    moments = [args.span * i / args.moments for i in range(args.moments)]
    started = time.monotonic()
    outcomes = []
    for sig in sigs:
        for fresh in modes:
            for moment in moments:
                o = run_once(sig, fresh, moment, args.stacks)
                outcomes.append(o)
                print(describe(o), flush=True)
                if not o.ok and o.stderr_tail:
                    print("    " + o.stderr_tail.replace("\n", "\n    "), flush=True)
    failed = [o for o in outcomes if not o.ok]
    slowest = max(outcomes, key=lambda o: o.took)
    print(
        json.dumps(
            {
                "runs": len(outcomes),
                "failed": len(failed),
                "slowest_stop_s": round(slowest.took, 2),
                "killed_before_handlers": sum(1 for o in outcomes if o.returncode is not None and o.returncode < 0),
                "wall_s": round(time.monotonic() - started, 1),
            }
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
