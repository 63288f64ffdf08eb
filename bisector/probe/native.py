"""Native stacks in the traced probe: the C/C++ allocations a span of calls left alive, by library and symbol.

memray, in native mode, runs from the span's first call to its last (an in-process Tracker, aggregated
format: its tables stay in memory and are written once at the end). Its leaked records at the end are
the allocations the span made and did not free, each with its native and Python stacks. memray names a
frame's function (demangled) but not its shared object, so ``Libraries`` finds the object in this
process: a C symbol by dlsym on each loaded object and dladdr on the address (the object that defines
it), a C++ one by its namespace (``c10::`` -> libc10.so, ``at::``/``torch::`` -> libtorch_cpu.so, ...).

What memray cannot see (docs/native-stacks.md): ``malloc`` called through a pointer from dlsym (ctypes'
``CDLL(None).malloc``, or libc loaded by ctypes) bypasses its PLT hooks; memory from a custom allocator
that never reaches malloc/mmap (a pool carved out once) shows only as the pool's first allocation.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bisector.judge.native import ROWS, library_owner, system_library

TOOL = "memray"
# Frames inside the allocator itself (and memray's hooks): the frame past them did the allocating.
ALLOCATORS = frozenset(
    {"malloc", "calloc", "realloc", "free", "posix_memalign", "aligned_alloc", "memalign", "valloc", "pvalloc"}
    | {"mmap", "mmap64", "operator new(unsigned long)", "operator new[](unsigned long)", "<unknown>"}
)
# Frames between a Python call and the C function it reached through ctypes or cffi.
FFI = ("ffi_call", "_call_function_pointer", "_ctypes_callproc", "PyCFuncPtr_call", "_cffi_")
MAX_RECORDS = 400  # leaked records resolved, the largest first (each new library's symbols cost ~1-2 s once)
FRAMES = 24  # native frames per record
EVAL = ("_PyEval_EvalFrame", "PyEval_EvalCode")
_C_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A C++ symbol's outer namespace -> the basename prefixes of the libraries that define it (in order).
NAMESPACES = {
    "c10": ("libc10",),
    "at": ("libtorch_cpu", "libtorch"),
    "torch": ("libtorch_python", "libtorch_cpu", "libtorch"),
    "caffe2": ("libtorch_cpu",),
    "onnxruntime": ("onnxruntime_pybind11_state", "libonnxruntime"),
    "Ort": ("onnxruntime_pybind11_state", "libonnxruntime"),
    "onnx": ("onnx_cpp2py_export", "libonnx"),
}


# BISECTOR_NATIVE_STACKS: "0" none; "1" every stage; unset ("auto") every stage but export, where memray's
# per-allocation unwinding and per-call frame tracking double a traced probe that is already ~5x slower
# than an untraced one (a CNN's traced export: 307 s without stacks, over 600 s with them, on a loaded machine).
DEFAULT_OFF = frozenset({"export"})


def wanted(stage: str) -> bool:
    setting = os.environ.get("BISECTOR_NATIVE_STACKS", "auto")
    if setting == "0":
        return False
    return stage not in DEFAULT_OFF if setting == "auto" else True


def available(stage: str = "") -> bool:
    if not wanted(stage):
        return False
    try:
        import memray  # noqa: F401
    except ImportError:
        return False
    return os.path.exists("/proc/self/maps")  # Libraries reads the process's mappings (Linux)


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


class Libraries:
    """The shared object that defines a symbol, in this process (a cache per symbol)."""

    def __init__(self) -> None:
        self.loaded = _loaded_objects()
        self._handles: dict[str, Any] = {}
        self._cache: dict[str, str | None] = {}
        libc = ctypes.CDLL(None)
        self._dladdr = libc.dladdr
        self._dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        self._dladdr.restype = ctypes.c_int

    def of(self, symbol: str) -> str | None:
        if symbol not in self._cache:
            self._cache[symbol] = self._find(symbol)
        return self._cache[symbol]

    def _find(self, symbol: str) -> str | None:
        if _C_NAME.match(symbol):
            for path in self.loaded:
                if system_library(path):
                    continue  # libc's malloc is no one's: the frame past it decides
                addr = self._address(path, symbol)
                if addr:
                    info = _DlInfo()
                    if self._dladdr(addr, ctypes.byref(info)) and info.dli_fname:
                        return os.path.realpath(info.dli_fname.decode(errors="replace"))
            return None
        outer = symbol.split("::", 1)[0].split("<", 1)[0].strip() if "::" in symbol else ""
        for prefix in NAMESPACES.get(outer, ()):
            for path in self.loaded:
                if os.path.basename(path).startswith(prefix):
                    return path
        return None

    def _address(self, path: str, symbol: str) -> int | None:
        handle = self._handles.get(path, 0)
        if handle == 0:
            try:  # already loaded: RTLD_NOLOAD only takes a reference, it never loads anything
                handle = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            except OSError:
                handle = None
            self._handles[path] = handle
        if handle is None:
            return None
        try:
            return ctypes.cast(getattr(handle, symbol), ctypes.c_void_p).value
        except AttributeError:
            return None


def _loaded_objects() -> list[str]:
    """The shared objects mapped in this process, in load order (file-backed, executable mappings)."""
    out: dict[str, None] = {}
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and "x" in parts[1] and ".so" in parts[5]:
                    out.setdefault(parts[5].strip(), None)
    except OSError:
        return []
    return list(out)


def group(
    records: Iterable[tuple[int, int, Sequence[tuple[str, str, int]], Sequence[tuple[str, str, int]]]],
    libraries: Libraries,
    python_owner: Any,
    roots: Sequence[str],
    calls: int,
) -> dict[str, Any]:
    """Native bytes per call by (library, symbol, owner, Python site).

    records: (bytes, allocations, native frames, Python frames), frames innermost first as memray gives
    them ((function, file, line)). python_owner: owners.Classifier.owner, for the Python site. A record
    with no frame outside the system's libraries (the interpreter's own allocations: Python objects,
    which tracemalloc counts) is left to ``interpreter``."""
    calls = max(1, calls)
    rows: dict[tuple[str, str, str, str], list[int]] = {}
    interpreter = 0
    for size, count, native, python in records:
        found = _frame(native, libraries)
        if found is None:
            interpreter += size
            continue
        path, symbol, via_ffi = found
        py_group, where = python_owner([(f, line) for _, f, line in python]) if python else ("other", "?")
        owner = library_owner(path, roots, py_group if via_ffi else None)
        key = (os.path.basename(path), symbol, owner, where)
        row = rows.setdefault(key, [0, 0])
        row[0] += size
        row[1] += count
    ranked = sorted(rows.items(), key=lambda kv: -kv[1][0])
    return {
        "tool": TOOL,
        "calls": calls,
        "sites": [
            {
                "library": lib,
                "symbol": symbol,
                "owner": owner,
                "where": where,
                "bytes": round(b / calls),
                "allocations": round(n / calls, 2),
            }
            for (lib, symbol, owner, where), (b, n) in ranked[:ROWS]
        ],
        "interpreter": round(interpreter / calls),
    }


def _frame(native: Sequence[tuple[str, str, int]], libraries: Libraries) -> tuple[str, str, bool] | None:
    """(library, symbol, reached through ctypes/cffi) of the innermost frame outside the system's libraries.

    The walk ends at the interpreter's eval loop: past it are Python's frames (memray has them, with
    their lines, as the Python stack). The interpreter's own functions (Py*, _Py*, and those memray found
    in Python's own sources, given relative to its build folder) are looked past without a lookup."""
    for i, (symbol, file, _) in enumerate(native):
        if symbol.startswith(EVAL):
            return None
        if symbol in ALLOCATORS or symbol.startswith(("std::", "_Py", "Py")) or _interpreter_source(file):
            continue
        path = libraries.of(symbol)
        if path is None or system_library(path):
            continue
        outer = [s for s, _, _ in native[i + 1 : i + 8]]
        return path, symbol, any(s.startswith(FFI) for s in outer)
    return None


def _interpreter_source(file: str) -> bool:
    return file.startswith(("Objects/", "Python/", "Modules/", "./Modules/", "Parser/", "Include/", "./Include/"))


class NativeTracer:
    """memray over the repeat span of a traced probe (loop.OwnerTracer): warm() before the tracer's own
    warm-up pass, ready() and start() around the span's first heap reading, stop() after its last call,
    read() once the span is measured."""

    def __init__(self, workdir: Path, python_owner: Any, roots: Sequence[str]) -> None:
        import memray

        self.memray = memray
        self.file = Path(workdir) / f"native-{os.getpid()}.memray"
        self.python_owner = python_owner
        self.roots = list(roots)
        self.tracker: Any = None
        self.stopped = False
        self.leftover = 0.0  # heap bytes one start and stop leave behind (ready)
        self.cost_s = 0.0
        self.error = ""

    def warm(self, heap: Callable[[], float]) -> None:
        """Before the traced probe's own warm-up pass: memray's first start keeps ~100-170 KB for good
        (its hooks' tables), and a pass under memray leaves what it allocates once per Python function
        (the line tables of code objects it reports); neither is the span's growth."""
        self._cycle(heap)
        self.start()

    def ready(self, heap: Callable[[], float]) -> None:
        """Just before the span (and its heap reading): the warm-up's run ends, and an empty run
        measures what each start and stop leave on the heap (``leftover``, subtracted from the span's)."""
        self._exit()
        self.file.unlink(missing_ok=True)
        self.leftover = self._cycle(heap)

    def _cycle(self, heap: Callable[[], float]) -> float:
        before = heap()
        self.start()
        self._exit()
        self.file.unlink(missing_ok=True)
        return heap() - before

    def _exit(self) -> None:
        if self.tracker is not None:
            tracker, self.tracker = self.tracker, None
            try:
                tracker.__exit__(None, None, None)
            except Exception as e:  # noqa: BLE001 - a tracker that cannot stop leaves no stacks, not a failed probe
                self.error = f"{type(e).__name__}: {e}"

    def start(self) -> None:
        t0 = time.perf_counter()
        self.file.unlink(missing_ok=True)
        self.stopped = False
        try:
            tracker = self.memray.Tracker(
                str(self.file), native_traces=True, file_format=self.memray.FileFormat.AGGREGATED_ALLOCATIONS
            )
            tracker.__enter__()
            self.tracker = tracker
        except Exception as e:  # noqa: BLE001 - another tracker active, no room for the file: stated, not fatal
            self.error = f"{type(e).__name__}: {e}"
        self.cost_s += time.perf_counter() - t0

    def stop(self) -> None:
        """The span's end: memray stops (and frees its tables) before the heap meter reads."""
        if self.tracker is not None:
            t0 = time.perf_counter()
            self._exit()
            self.stopped = True
            self.cost_s += time.perf_counter() - t0

    def read(self, calls: int) -> dict[str, Any]:
        """The span's live allocations, grouped. Read after the span is measured: resolving symbols
        keeps memray's symbol tables (libbacktrace's, ~100s of KB) for the rest of the process."""
        if not self.stopped:
            return {"tool": TOOL, "error": self.error or "not started"}
        t0 = time.perf_counter()
        try:
            reader = self.memray.FileReader(str(self.file))
            try:
                # The largest first: a leak is one record however many calls made it (aggregated by stack).
                leaked = sorted(reader.get_leaked_allocation_records(merge_threads=True), key=lambda r: -r.size)
                records = [
                    (r.size, r.n_allocations, r.native_stack_trace(max_stacks=FRAMES), r.stack_trace(max_stacks=16))
                    for r in leaked[:MAX_RECORDS]
                ]
                skipped = sum(r.size for r in leaked[MAX_RECORDS:])
            finally:
                reader.close()
            out = group(records, Libraries(), self.python_owner, self.roots, calls)
            out["records"], out["skipped"] = len(leaked), round(skipped / max(1, calls))
        except Exception as e:  # noqa: BLE001 - an unreadable capture is a missing figure, not a failed probe
            out = {"tool": TOOL, "error": f"{type(e).__name__}: {e}"}
        finally:
            self.file.unlink(missing_ok=True)
        self.cost_s += time.perf_counter() - t0
        out["cost_s"] = round(self.cost_s, 3)
        return out
