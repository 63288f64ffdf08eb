"""What probes measured, kept on disk: control runs across runs and models (the user cache folder),
and a run's own model probes in its run directory, so a re-run or ``fix`` after ``find`` reuses them."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

from bisector import fixers
from bisector.common.contract import toolchain_versions
from bisector.common.marks import CACHE, mark
from bisector.probe.types import ProbeFailed, ProbeOk, ProbeRequest, ProbeResult, result_from_json


def default_cache_dir() -> Path:
    base = os.environ.get("BISECTOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bisector"
    )
    return Path(base)


def code_version() -> str:
    """A hash of bisector's own code (and its fixers): a cached result is only reused by the
    code that made it."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        h = hashlib.sha256()
        # Installed, the fixers sit inside bisector's folder; in a checkout, beside it: a set.
        root = Path(__file__).resolve().parents[1]
        for f in sorted({f for folder in (root, fixers.FOLDER.resolve()) for f in folder.rglob("*.py")}):
            try:
                h.update(f.read_bytes())
            except OSError:
                pass
        _CODE_VERSION = h.hexdigest()[:12]
    return _CODE_VERSION


_CODE_VERSION: str | None = None


def versions() -> dict[str, str]:

    out = {"python": sys.version.split()[0], "executable": sys.executable, "bisector": code_version()}
    # Which onnxruntime distribution is installed matters too (the GPU wheel's CPU provider is a
    # different build): the contract's lookup says both.
    out.update({k: v for k, v in toolchain_versions().items() if v is not None})
    try:
        out["onnxscript"] = metadata.version("onnxscript")
    except metadata.PackageNotFoundError:
        pass
    return out


class ControlCache:
    """Control curves on disk, keyed by everything that decides them."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._versions = versions() if folder else {}
        self._marked = False

    def _path(self, request: ProbeRequest) -> Path | None:
        if self.folder is None:
            return None
        data = request.to_json()
        data.pop("label", None)
        if not request.plan.use_hook:
            data.pop("model", None)  # the control never runs the model's code
        data["versions"] = self._versions
        key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]
        return self.folder / "controls" / f"{request.tag}-{key}.json"

    def get(self, request: ProbeRequest) -> ProbeResult | None:
        path = self._path(request)
        if path is None or not path.exists():
            return None
        try:
            return result_from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError):
            return None

    def put(self, request: ProbeRequest, result: ProbeResult) -> None:
        path = self._path(request)
        if path is None or not isinstance(result, ProbeOk):
            return
        if not self._marked and self.folder is not None:
            mark(self.folder, CACHE)  # what `bisector clean` may remove later
            self._marked = True
        # The first control measured for a key is the one every run uses: two processes that
        # missed at once measure two different curves, and a run re-read from its cache must judge
        # against the control it was judged against (seen: a rerun's figures moved when a parallel
        # test replaced the shared control between the two runs).
        write_atomic(path, result.to_json(), replace=False)


def write_atomic(path: Path, data: Any, replace: bool = True) -> None:
    """JSON to path via a temp file and a rename: a reader never sees half a file. replace=False:
    an existing file is kept (the first writer wins). A cache that cannot write is no error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data))
        if replace:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)  # atomic, and fails where the file exists
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    except OSError:
        pass


class ResultCache:
    """Model probe results of one run directory, keyed by the request and a hash of the model's
    code and weights (salt): a re-run, an interrupted run resumed, or `fix` after `find` reuse
    every probe that finished."""

    def __init__(self, folder: Path, salt: str) -> None:
        self.folder = folder
        self.salt = salt

    def _path(self, request: ProbeRequest, extra: str = "") -> Path:
        key = hashlib.sha256(f"{request.key()}:{self.salt}:{extra}:{code_version()}".encode()).hexdigest()[:24]
        return self.folder / f"{request.tag}-{key}.json"

    def get(self, request: ProbeRequest, extra: str = "") -> ProbeResult | None:
        path = self._path(request, extra)
        if not path.exists():
            return None
        try:
            return result_from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError):
            return None

    def put(self, request: ProbeRequest, result: ProbeResult, extra: str = "") -> None:
        # Crashes and timeouts are not kept: they may be the machine's fault, worth a retry.
        if not isinstance(result, (ProbeOk, ProbeFailed)):
            return
        path = self._path(request, extra)
        write_atomic(path, result.to_json())
