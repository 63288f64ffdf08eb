"""What bisector keeps on disk, how much of it, and removing it: `bisector clean` and the cap on
recorded inputs.

Two places: the control cache (BISECTOR_CACHE, else ~/.cache/bisector: control curves shared by
every project) and a run directory (./.bisector or --run-dir: runs/ with each model's probe
results, captures/ with recorded region inputs, repair/ with repair's default output, backups/
with the files --apply replaced). Each run, capture and backup is one entry, so caps remove them
oldest first. Backups are the user's safety net: only removed when asked for by name.

Captures grow fastest (one find on a 3-module conv with H up to 256 recorded 187 MB), so a run
keeps its recorded inputs only while it needs them: a run claims the capture (a `.in-use-<pid>`
file in it) and removes the inputs when it ends, keeping only the module tree (a few KB), unless
another live process claims it too (release_capture); a run stopped half way keeps them, to
resume. After each one is written, the others are evicted oldest
first past a cap (1 GB by default; BISECTOR_CAPTURE_CAP or [tool.bisector] capture_cap), sparing
only those another live process claims (and, for captures with no claim, those written in the
last hour). Evicting one a run still needs costs a re-recording, not a wrong result: a run records
any shape whose file is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bisector.common.errors import UserError
from bisector.common.marks import CACHE, MARK, REPAIR_OUT, RUN_DIR, owned, real_dir
from bisector.common.units import parse_size
from bisector.options.config import load_config

CONTROL_CACHE, RUN, CAPTURE, REPAIR, BACKUP = "control-cache", "run", "capture", "repair", "backup"
# Listed so the user sees it, never selected: bisector cannot prove it wrote it.
FOREIGN = "not-bisectors"
# The known layout of a run directory: folders whose children (real folders) are entries of
# their own, and repair's default output, one entry.
_PER_CHILD = {"runs": RUN, "captures": CAPTURE, "backups": BACKUP}
# ... and the names bisector gives those children (lab.run_key, lab.capture_key, apply's backups):
# a folder there under any other name is not bisector's, whoever put it in a marked folder.
_CHILD_NAME = {
    RUN: re.compile(r"^.+-[0-9a-f]{16}$"),
    CAPTURE: re.compile(r"^.+-[0-9a-f]{12}-[0-9a-f]{16}$"),
    BACKUP: re.compile(r"^\d{8}-\d{6}$"),
}
_WHOLE = {"repair": REPAIR}
# The control cache's one folder and the names of its files (tag-<24 hex>.json, and the temp
# files of a write in flight).
CONTROLS = "controls"
_CONTROL_FILE = re.compile(r"^[\w.-]+-[0-9a-f]{24}\.json$|^[\w.-]+-[0-9a-f]{24}\.\d+\.\d+\.tmp$")
CAPTURE_CAP_ENV = "BISECTOR_CAPTURE_CAP"
DEFAULT_CAPTURE_CAP = 1000**3
# A capture written this recently may belong to a run still going in another process: spared.
RECENT_S = 3600.0
DAY_S = 86400.0


@dataclass(frozen=True)
class Entry:
    """One removable thing: its kind, where, its bytes, and when it last changed (newest file)."""

    kind: str
    path: Path
    size: int
    mtime: float

    def age_days(self, now: float) -> float:
        return max(0.0, now - self.mtime) / DAY_S


def measure_path(path: Path) -> tuple[int, float]:
    """Bytes of the files under path (a file: its own) and the newest modification time among
    them and the folders; (0, 0.0) when it is gone. Unreadable parts count as nothing."""
    try:
        st = path.stat()
    except OSError:
        return 0, 0.0
    if not path.is_dir():
        return st.st_size, st.st_mtime
    size, newest = 0, st.st_mtime
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        s = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    newest = max(newest, s.st_mtime)
                    if e.is_dir(follow_symlinks=False):
                        stack.append(Path(e.path))
                    else:
                        size += s.st_size
        except OSError:
            continue
    return size, newest


def _entry(kind: str, path: Path) -> Entry:
    size, mtime = measure_path(path)
    return Entry(kind, path, size, mtime)


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _control_files(folder: Path) -> list[Path]:
    return [p for p in _children(folder) if _CONTROL_FILE.match(p.name) and p.is_file() and not p.is_symlink()]


def _cache_entries(cache_dir: Path) -> list[Entry]:
    """The control cache: its controls/ folder, one entry, when the cache folder is bisector's
    (marked, or from before the mark: a controls/ folder of nothing but control files). Anything
    else there is listed as not bisector's."""
    controls = cache_dir / CONTROLS
    legacy = real_dir(controls) and all(_CONTROL_FILE.match(p.name) for p in _children(controls))
    if not (owned(cache_dir, CACHE) or legacy):
        return [_entry(FOREIGN, p) for p in _children(cache_dir) if p.name != MARK]
    out = []
    for p in _children(cache_dir):
        if p.name == MARK:
            continue
        if p.name == CONTROLS and real_dir(p):
            files = _control_files(p)
            size = sum(f.stat().st_size for f in files)
            mtime = max([f.stat().st_mtime for f in files], default=0.0)
            out.append(Entry(CONTROL_CACHE, p, size, mtime))
            strays = [f for f in _children(p) if f not in files]
            out += [_entry(FOREIGN, f) for f in strays]
        else:
            out.append(_entry(FOREIGN, p))
    return out


def _ours(kind: str, child: Path) -> bool:
    return real_dir(child) and _CHILD_NAME[kind].match(child.name) is not None


def _run_dir_entries(run_dir: Path) -> list[Entry]:
    """A run directory's runs, captures, backups and repair output, when bisector marked it; the
    rest of it (and all of an unmarked one) is listed as not bisector's."""
    if not owned(run_dir, RUN_DIR):
        return [_entry(FOREIGN, p) for p in _children(run_dir)]
    out = []
    for p in _children(run_dir):
        if p.name in (".gitignore", MARK):  # the mark, and what keeps the run data out of git
            continue
        kind = _PER_CHILD.get(p.name)
        if kind is not None and real_dir(p):
            out += [_entry(kind if _ours(kind, child) else FOREIGN, child) for child in _children(p)]
        elif p.name in _WHOLE and real_dir(p) and owned(p, REPAIR_OUT):
            # Only a repair output bisector marked: a folder the user made under that name, or put
            # their own files in before repair claimed it, is not bisector's to remove.
            out.append(_entry(_WHOLE[p.name], p))
        else:
            out.append(_entry(FOREIGN, p))
    return out


def entries(run_dir: Path | None, cache_dir: Path | None) -> list[Entry]:
    """Everything in these two places: one entry per run, capture and backup bisector made, the
    control cache as one, and everything else as not bisector's (listed, never removed)."""
    out = _cache_entries(cache_dir) if cache_dir is not None and real_dir(cache_dir) else []
    if run_dir is not None and real_dir(run_dir):
        out += _run_dir_entries(run_dir)
    return out


def select(
    found: Sequence[Entry],
    keep_days: float | None = None,
    max_size: int | None = None,
    backups: bool = False,
    now: float | None = None,
    controls: bool = True,
) -> list[Entry]:
    """What to remove: without a cap everything; with --keep-days what changed longer ago; with
    --max-size the oldest until the rest fits. Backups only when asked for; the control cache
    (shared by every project) unless kept (controls=False)."""
    now = time.time() if now is None else now
    candidates = [
        e
        for e in found
        if e.kind != FOREIGN and (backups or e.kind != BACKUP) and (controls or e.kind != CONTROL_CACHE)
    ]
    if keep_days is None and max_size is None:
        return list(candidates)
    chosen = [e for e in candidates if keep_days is not None and e.age_days(now) > keep_days]
    if max_size is not None:
        left = sorted((e for e in candidates if e not in chosen), key=lambda e: e.mtime)
        total = sum(e.size for e in left)
        for e in left:
            if total <= max_size:
                break
            chosen.append(e)
            total -= e.size
    return chosen


def remove(targets: Iterable[Entry]) -> list[tuple[Entry, str]]:
    """Delete the entries; returns those that could not be (with why): a clean that stops half way
    would leave the user guessing."""
    failed = []
    for e in targets:
        if e.kind == FOREIGN:  # a caller's slip must not become a deletion
            failed.append((e, "not bisector's"))
            continue
        try:
            if e.kind == CONTROL_CACHE:
                for f in _control_files(e.path):
                    f.unlink(missing_ok=True)
                if not any(e.path.iterdir()):
                    e.path.rmdir()
            elif real_dir(e.path):
                shutil.rmtree(e.path)
            elif e.path.is_symlink() or e.path.exists():
                raise OSError(0, "not a folder any more")
        except OSError as exc:
            failed.append((e, exc.strerror or str(exc)))
    return failed


@dataclass(frozen=True)
class Outcome:
    """An entry after `bisector clean`: chosen by the caps or not, removed or not (and why not)."""

    entry: Entry
    selected: bool
    removed: bool = False
    error: str = ""

    def to_json(self, now: float) -> dict[str, object]:
        e = self.entry
        out: dict[str, object] = {"kind": e.kind, "path": str(e.path), "bytes": e.size}
        out.update(age_days=round(e.age_days(now), 2), selected=self.selected, removed=self.removed)
        if self.error:
            out["error"] = self.error
        return out


def clean(
    run_dir: Path | None,
    cache_dir: Path | None,
    keep_days: float | None = None,
    max_size: int | None = None,
    backups: bool = False,
    delete: bool = False,
    now: float | None = None,
    controls: bool = True,
) -> list[Outcome]:
    """List every entry, mark what the caps choose, and delete those when asked (the control
    cache only with controls)."""
    found = entries(run_dir, cache_dir)
    chosen = set(select(found, keep_days, max_size, backups, now, controls))
    failed = dict(remove(e for e in found if e in chosen)) if delete else {}
    return [Outcome(e, e in chosen, delete and e in chosen and e not in failed, failed.get(e, "")) for e in found]


# -- the cap on recorded inputs ---------------------------------------------------------------


def capture_cap(model_path: str | None = None) -> int:
    """BISECTOR_CAPTURE_CAP, else [tool.bisector] capture_cap near the model, else 1 GB."""

    text = os.environ.get(CAPTURE_CAP_ENV)
    if text:
        try:
            return parse_size(text, CAPTURE_CAP_ENV)
        except UserError:
            return DEFAULT_CAPTURE_CAP  # a bad variable must not stop a find half way: the default holds
    try:
        value = load_config(model_path).get("capture_cap")
        return parse_size(value) if value is not None else DEFAULT_CAPTURE_CAP
    except UserError:
        return DEFAULT_CAPTURE_CAP


_CLAIM = ".in-use-"


def claim_capture(folder: Path) -> None:
    """Say that this process uses the capture folder (until release_capture)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{_CLAIM}{os.getpid()}").touch()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


def claimed_by_others(folder: Path) -> bool | None:
    """Whether another live process claims the capture; None when nothing ever claimed it (a
    capture from before claims: only its age can say)."""
    try:
        claims = [p.name[len(_CLAIM) :] for p in folder.iterdir() if p.name.startswith(_CLAIM)]
    except OSError:
        return None
    if not claims:
        return None
    return any(c.isdigit() and int(c) != os.getpid() and _alive(int(c)) for c in claims)


KEPT_FILE = "tree.json"  # the module tree: a few KB, and a re-run needs it before any probe


def release_capture(folder: Path | None) -> bool:
    """The run that claimed the capture is done with it: remove the recorded inputs (all but the
    module tree), unless another live process still claims it (then only this process's claim
    goes). True when the inputs were removed."""
    if folder is None or not folder.is_dir() or folder.parent.name != "captures":
        return False
    if not owned(folder.parent.parent, RUN_DIR) or not _ours(CAPTURE, folder):
        return False  # a folder bisector cannot prove it wrote is never removed
    try:
        (folder / f"{_CLAIM}{os.getpid()}").unlink()
    except OSError:
        pass
    if claimed_by_others(folder):
        return False
    try:
        for f in folder.iterdir():
            if f.name != KEPT_FILE and f.is_file() and not f.is_symlink():
                f.unlink()
            elif f.name != KEPT_FILE and real_dir(f):
                shutil.rmtree(f)
    except OSError:
        return False
    return True


def evict_captures(
    in_use: Path, model_path: str | None = None, cap: int | None = None, now: float | None = None
) -> list[Entry]:
    """After a capture is written: remove other captures beside it, oldest first, until all of them
    fit under the cap (capture_cap for the model, unless given). Never the one in use, nor one
    another live process claims, nor an unclaimed one written in the last hour (another run's from
    before claims, maybe): so the cap holds within a run. Returns what was removed."""
    in_use = Path(in_use)
    root = in_use.parent.parent
    if in_use.parent.name != "captures" or not owned(root, RUN_DIR):
        return []  # captures bisector cannot prove it wrote are never evicted
    cap = capture_cap(model_path) if cap is None else cap
    now = time.time() if now is None else now
    try:
        os.utime(in_use)  # last used now: the newest, whatever its files' age
    except OSError:
        pass
    captures = [e for e in _run_dir_entries(root) if e.kind == CAPTURE]
    total = sum(e.size for e in captures)
    if total <= cap:
        return []
    removed = []
    for e in sorted(captures, key=lambda e: e.mtime):
        if total <= cap:
            break
        others = claimed_by_others(e.path)
        if e.path == in_use or others or (others is None and now - e.mtime < RECENT_S):
            continue
        if not remove([e]):
            removed.append(e)
            total -= e.size
    return removed
