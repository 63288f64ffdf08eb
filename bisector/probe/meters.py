"""Meters read inside the child after every call, after a full garbage collection.

- RSS and USS (psutil): what the operating system sees, native leaks included;
- live gc-tracked objects: the exact signal for Python-level leaks (CPython's refleak hunter and
  objgraph count the same way); by type at phase boundaries, to say *what* piles up; plus the
  entries of the modules' ``__warningregistry__`` dicts, whose keys (message, builtin class, line)
  the collector stops tracking, so a warning whose text names the input grows no count otherwise;
- the C heap's in-use bytes (glibc's mallinfo2), exact: what native code (and every Python object
  over 512 bytes) holds, without RSS's pages, allocator caching or fragmentation;
- the bytes of the unique storages of live tensors Python can reach (TensorMeter), exact, on CPU or
  GPU: growth held in one ever-larger tensor (``self.bank = torch.cat([self.bank, x])``) moves no
  object count, and one row a call is far under the heap's floor;
- tracemalloc, when asked: Python allocations and the source lines that made them;
- on CUDA: this process's GPU memory from NVML, and torch's allocated/reserved bytes.

The sampling itself must not create objects that outlive it, or it would measure itself: the
object count is read first, right after gc.collect(), and the caller stores readings in arrays.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import time
import weakref
from collections import Counter
from collections.abc import Iterable
from typing import Any

TYPE_TOP = 12  # types reported per phase
WARNING_ENTRY = "warnings.__warningregistry__ entry"  # the pseudo-type type_counts names them by


def warning_registry_entries() -> int:
    """Entries in the warnings registries of the loaded modules (one per distinct message, category
    and line shown under the "default" or "module" action), less each registry's version key."""
    total = 0
    for module in list(sys.modules.values()):
        registry = getattr(module, "__dict__", {}).get("__warningregistry__")
        if type(registry) is dict:
            total += len(registry) - ("version" in registry)
    return total


def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
        return trim
    except (OSError, AttributeError):
        return None


class _Mallinfo2(ctypes.Structure):
    # glibc >= 2.33: every field a size_t (mallinfo's ints wrap past 2 GiB).
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo2() -> Any:
    """A function returning the C heap's in-use bytes (glibc's mallinfo2: chunks in use in every
    arena plus mmap'd blocks), or None where the C library has no mallinfo2 (musl, macOS, old glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.argtypes = []
    fn.restype = _Mallinfo2

    def heap_bytes() -> int:
        info = fn()
        return int(info.uordblks) + int(info.hblkhd)

    return heap_bytes


class TensorMeter:
    """Bytes of the unique storages of live tensors that Python can reach, on any device: the sum of
    ``untyped_storage().nbytes()`` over storages deduplicated by data pointer (views, ``.detach()``
    and tensors sharing a storage count once). Exact, and cheap because it walks only what the
    collector tracks apart from what was frozen before the loop (the list the object count reads
    anyway), plus the tensors that existed when the loop froze them (the model's parameters and
    buffers, module-level tensors), held by weak reference: a frozen tensor can still grow in
    place (``self.queue.data = torch.cat(...)``, ``resize_``).

    Reading a tensor's storage gives it a Python object that lives as long as the storage (torch
    preserves it), gc-tracked: the object count leaves UntypedStorage out (``storages`` says how
    many there are) and counts their bytes here instead, so the meter does not measure itself. A
    storage without data (meta, fake tensors, empty) weighs nothing."""

    def __init__(self) -> None:
        self._frozen: list[Any] = []  # weak references to the tensors frozen before the loop
        self.element_bytes: int | None = None  # the smallest element size seen: the exact floor
        self.seconds = 0.0  # time spent reading, over all samples
        self.reads = 0

    @staticmethod
    def _torch() -> Any:
        return sys.modules.get("torch")

    def watch(self, objects: Iterable[Any]) -> None:
        """Keep the tensors among these (the collector's objects before gc.freeze) by weak
        reference, and read their storages now so that the storages' Python objects are frozen
        with them."""
        torch = self._torch()
        if torch is None:
            return
        tensor = torch.Tensor
        for obj in objects:
            if issubclass(type(obj), tensor):
                try:
                    self._frozen.append(weakref.ref(obj))
                    obj.untyped_storage()
                except Exception:  # noqa: BLE001 - no weak reference or no plain storage: skipped
                    continue

    def read(self, objects: list[Any]) -> tuple[float, int] | None:
        """(bytes of the unique storages, UntypedStorage objects among `objects`), or None before
        torch is imported."""
        torch = self._torch()
        if torch is None:
            return None
        started = time.perf_counter()
        tensor, storage = torch.Tensor, torch.UntypedStorage
        kinds: dict[type, int] = {}  # per read: a type cached longer would be kept alive
        seen: set[tuple[int, bool]] = set()
        total = 0
        storages = 0
        smallest = self.element_bytes
        found = [r() for r in self._frozen]
        for obj in objects:
            tp = type(obj)
            kind = kinds.get(tp)
            if kind is None:
                kind = kinds[tp] = 1 if issubclass(tp, tensor) else (2 if issubclass(tp, storage) else 0)
            if kind == 1:
                found.append(obj)
            elif kind == 2:
                storages += 1
                total += _storage_bytes(obj, seen)
        for t in found:
            if t is None:
                continue
            try:
                st = t.untyped_storage()
                size = int(t.element_size())
            except Exception:  # noqa: BLE001 - sparse, nested or functional tensors have no plain storage
                continue
            added = _storage_bytes(st, seen)
            if added:
                total += added
                smallest = size if smallest is None else min(smallest, size)
        del found, kinds
        self.element_bytes = smallest
        self.seconds += time.perf_counter() - started
        self.reads += 1
        return float(total), storages


def _storage_bytes(st: Any, seen: set[tuple[int, bool]]) -> int:
    """A storage's bytes the first time its data pointer is met, else 0."""
    try:
        ptr = int(st.data_ptr())
        key = (ptr, bool(st.is_cuda))
        if ptr == 0 or key in seen:
            return 0
        seen.add(key)
        return int(st.nbytes())
    except Exception:  # noqa: BLE001 - a meta or fake storage has no data to count
        return 0


class Meters:
    def __init__(
        self,
        device: str = "cpu",
        tracemalloc: bool = False,
        nvml: Any = None,
        trim: bool = True,
        heap: Any = "auto",
        trace_frames: int = 25,
        tensors: bool = True,
    ) -> None:
        import psutil

        self.proc = psutil.Process()
        self.device = device
        self.tracemalloc = tracemalloc
        self.gpu_source: str | None = None
        self._nvml = None
        self._nvml_handles: list[Any] = []
        self._torch_cuda = None
        if device == "cuda":
            import torch

            self._torch_cuda = torch.cuda
            self._init_nvml(nvml)
        if tracemalloc:
            import tracemalloc as tm

            tm.start(trace_frames)
        self._uss_ok = True
        # Free memory the C allocator keeps (heap top, freed chunks) is returned before reading,
        # as gc.collect() does for Python: what remains is memory something still holds. Without
        # it, a clean model shows RSS rising to its largest shape's high-water mark.
        self._trim = _malloc_trim() if trim else None
        # heap: "auto" (mallinfo2 where glibc has it), None (off), or a callable (tests fake it).
        self._heap = _mallinfo2() if heap == "auto" else heap
        self.heap_source = "mallinfo2" if self._heap is not None else None
        self.tensors = TensorMeter() if tensors else None

    # -- NVML -----------------------------------------------------------------------------------

    def _init_nvml(self, nvml: Any) -> None:
        try:
            if nvml is None:
                import pynvml as nvml  # from the nvidia-ml-py package
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
            self._nvml_handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = nvml
        except Exception:  # noqa: BLE001 - no driver, no library: GPU memory is simply not read
            self._nvml = None

    def gpu_bytes(self) -> int | None:
        """This process's GPU memory across devices; device-wide used memory when NVML cannot
        attribute memory to processes (common in containers, where PIDs do not match)."""
        nvml = self._nvml
        if nvml is None:
            return None
        pid = os.getpid()
        total = 0
        found = False
        try:
            for h in self._nvml_handles:
                for p in nvml.nvmlDeviceGetComputeRunningProcesses(h):
                    if p.pid == pid and p.usedGpuMemory is not None:
                        total += int(p.usedGpuMemory)
                        found = True
        except Exception:  # noqa: BLE001
            found = False
        if found:
            self.gpu_source = "nvml-process"
            return total
        try:
            used = sum(int(nvml.nvmlDeviceGetMemoryInfo(h).used) for h in self._nvml_handles)
        except Exception:  # noqa: BLE001
            return None
        self.gpu_source = "nvml-device"
        return used

    # -- sampling -------------------------------------------------------------------------------

    def sample(self) -> dict[str, float | None]:
        gc.collect()
        everything = gc.get_objects()
        read = self.tensors.read(everything) if self.tensors is not None else None
        # The storages' Python objects are the tensor meter's to count, by bytes (TensorMeter).
        objects = len(everything) - (read[1] if read is not None else 0) + warning_registry_entries()
        del everything
        values: dict[str, float | None] = {"objects": float(objects)}
        if read is not None:
            values["tensors"] = read[0]
        if self._trim is not None:
            self._trim(0)
        heap = self._heap_bytes()
        if heap is not None:
            values["heap"] = heap
        mem = self.proc.memory_info()
        values["rss"] = float(mem.rss)
        values["uss"] = self._uss()
        if self._torch_cuda is not None:
            cuda = self._torch_cuda
            if cuda.is_initialized():
                cuda.synchronize()
                values["cuda_allocated"] = float(cuda.memory_allocated())
                values["cuda_reserved"] = float(cuda.memory_reserved())
            gpu = self.gpu_bytes()
            values["gpu"] = float(gpu) if gpu is not None else None
        if self.tracemalloc:
            import tracemalloc as tm

            values["traced"] = float(tm.get_traced_memory()[0])
        return values

    def _heap_bytes(self) -> float | None:
        if self._heap is None:
            return None
        import tracemalloc as tm

        # tracemalloc's own bookkeeping is malloc'd too: it is the meter's, not the workload's.
        return float(self._heap() - (tm.get_tracemalloc_memory() if tm.is_tracing() else 0))

    def heap_now(self) -> float | None:
        """The heap's in-use bytes now, after a collection and a trim, as sample() reads them."""
        gc.collect()
        if self._trim is not None:
            self._trim(0)
        return self._heap_bytes()

    def _uss(self) -> float | None:
        if not self._uss_ok:
            return None
        try:
            return float(self.proc.memory_full_info().uss)
        except Exception:  # noqa: BLE001 - /proc/<pid>/smaps may be unreadable in some sandboxes
            self._uss_ok = False
            return None

    def watch_tensors(self) -> None:
        """Before the loop's gc.freeze: the tensors setup made, which the collector stops listing."""
        if self.tensors is not None:
            self.tensors.watch(gc.get_objects())

    @staticmethod
    def type_counts() -> Counter:
        gc.collect()
        counts: Counter = Counter()
        for obj in gc.get_objects():
            t = type(obj)
            counts[f"{t.__module__}.{t.__qualname__}"] += 1
        # The tensor meter's storage objects (TensorMeter), left out of the count as sample() does.
        counts.pop("torch.storage.UntypedStorage", None)
        entries = warning_registry_entries()
        if entries:
            counts[WARNING_ENTRY] = entries
        return counts

    def snapshot(self) -> Any:
        if not self.tracemalloc:
            return None
        import tracemalloc as tm

        return tm.take_snapshot()

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass


def type_growth(before: Counter, after: Counter, top: int = TYPE_TOP) -> dict[str, int]:
    """The types whose live count rose the most between two snapshots."""
    grown = {k: after[k] - before.get(k, 0) for k in after if after[k] > before.get(k, 0)}
    return dict(sorted(grown.items(), key=lambda kv: -kv[1])[:top])


def traced_growth(before: Any, after: Any, top: int = 8) -> list[dict[str, Any]]:
    """Source lines whose Python allocations grew, like pytest-memray's leak report."""
    if before is None or after is None:
        return []
    stats = after.compare_to(before, "traceback")
    out = []
    for st in stats:
        if st.size_diff <= 0:
            continue
        frames = [f"{f.filename}:{f.lineno}" for f in st.traceback[-3:]]
        out.append({"size_diff": st.size_diff, "count_diff": st.count_diff, "where": frames})
        if len(out) == top:
            break
    return out
