"""Who owns a native allocation: the shared object that made it, mapped to an owner group.

The traced probe's native stacks (probe/native.py) name, for each allocation still live at the end of
the repeat phase, the innermost library outside the system's own (libc, libstdc++, the interpreter)
and its symbol. That library's owner:

- ``libtorch*``, ``libc10*``, ``libonnxruntime*``, ``libonnx*`` (and CUDA's, oneDNN's, OpenMP's), or
  any library inside a toolchain package's folder: the toolchain;
- a library the model's code calls into through ctypes or cffi, or one under the model's project: the
  model's;
- any other library inside site-packages: the model libraries; anything else: the model's.

Pure functions: the parent formats the report's native line from the probe's rows.
"""

from __future__ import annotations

import os
import re
import sysconfig
from collections.abc import Mapping, Sequence
from typing import Any

from bisector.common.units import format_bytes
from bisector.judge.owners import (
    LIBRARIES,
    MODEL,
    TOOLCHAIN,
    TOOLCHAIN_PACKAGES,
    _norm,
    _site_package,
    _under,
    native_share,
)

ROWS = 8  # sites kept per probe
TOOLCHAIN_LIBRARIES = re.compile(
    r"^(libtorch|libc10|libcaffe2|libshm|libonnxruntime|onnxruntime_pybind11_state|libonnx|onnx_cpp2py_export"
    r"|libcuda|libcudart|libcublas|libcudnn|libcufft|libcurand|libcusparse|libcusolver|libnccl|libnvrtc|libnvToolsExt"
    r"|libdnnl|libmkl|libiomp|libgomp)"
)
# Libraries no model or toolchain owns: the frame past them (their caller) decides.
SYSTEM_LIBRARIES = re.compile(
    r"^(libc|libm|libdl|librt|libpthread|libutil|ld-linux[^/]*|libstdc\+\+|libgcc_s|libffi|libpython[\d.]*m?|libz"
    r"|libcrypt|libexpat|libbz2|liblzma|libuuid|libssl|libcrypto)[-.]"
)
# Packages whose own libraries are the toolchain's beside TOOLCHAIN_PACKAGES (CUDA's wheels).
TOOLCHAIN_FOLDERS = frozenset({"nvidia", "triton"})
LABELS = {MODEL: "your code", LIBRARIES: "model libraries", TOOLCHAIN: "toolchain"}


def system_library(path: str) -> bool:
    """libc, libstdc++, the interpreter and its own extension modules, memray's hooks."""
    if SYSTEM_LIBRARIES.match(os.path.basename(path)):
        return True
    p = _norm(path)
    if _site_package(p) == "memray":
        return True
    paths = sysconfig.get_paths()
    return any(_under(p, _norm(paths[k])) for k in ("stdlib", "platstdlib") if k in paths)


def library_owner(path: str, roots: Sequence[str], caller: str | None = None) -> str:
    """The owner group of a shared object. caller: the owner of the Python code that called into it
    through ctypes or cffi, when it did (that library is then the caller's, unless it is the toolchain's)."""
    if TOOLCHAIN_LIBRARIES.match(os.path.basename(path)):
        return TOOLCHAIN
    p = _norm(path)
    package = _site_package(p)
    if package is not None and (package in TOOLCHAIN_PACKAGES or package in TOOLCHAIN_FOLDERS):
        return TOOLCHAIN
    if caller in (MODEL, LIBRARIES):
        return caller
    if any(_under(p, _norm(r)) for r in roots):
        return MODEL
    return LIBRARIES if package is not None else MODEL


def stacks(owners: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The native stacks of a traced probe's span (owners["repeat"]), when they ran."""
    got = owners.get("native_stacks")
    return got if isinstance(got, Mapping) else None


def site_text(row: Mapping[str, Any]) -> str:
    """libfilters.so `fir_alloc` <- filters.py:41 (your code)"""
    where = f" \u2190 {row['where']}" if row.get("where") and row["where"] != "?" else ""
    return f"{row['library']} `{row['symbol']}`{where} ({LABELS.get(row['owner'], row['owner'])})"


def native_lines(owners: Mapping[str, Any], per: str, floor: float = 0.0) -> list[str]:
    """The report's native line: the sites over ``floor`` bytes per call, biggest first, and the tool."""
    got = stacks(owners)
    if got is None:
        return []
    if got.get("error"):
        return [f"{'':<10} native: no stacks ({got.get('tool', '?')}: {got['error']})"]
    rows = [r for r in got.get("sites") or [] if float(r["bytes"]) > floor][:3]
    if not rows:
        if native_share(owners) > max(floor, 0.0) and native_share(owners) > 0:
            # Grown, and no stack saw it: malloc through a pointer from dlsym (ctypes' libc.malloc).
            return [f"{'':<10} native: no stack saw it ({got.get('tool', '?')} misses malloc reached through dlsym)"]
        return []
    parts = [f"{site_text(r)} {format_bytes(float(r['bytes']))}/{per}" for r in rows]
    return [f"{'':<10} native: " + "; ".join(parts) + f"  [{got.get('tool', '?')}]"]
