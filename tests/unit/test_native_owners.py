"""Native allocations by library and symbol: which owner a shared object is, how the report names a
site, and how the native stacks split native growth between the model and the toolchain."""

from __future__ import annotations

import pytest

from bisector.judge.attribution import attribute
from bisector.judge.native import library_owner, native_lines, system_library
from bisector.judge.owners import LIBRARIES, MODEL, OTHER, TOOLCHAIN, model_share, toolchain_share
from bisector.judge.verdict import LEAK, TOOLCHAIN_LEAK
from bisector.probe.native import Libraries, group
from tests.unit.test_owners import KB, heap_leak, owners

SITE = "/venv/lib/python3.11/site-packages"
ROOTS = ["/home/me/proj"]


@pytest.mark.parametrize(
    ("path", "caller", "owner"),
    [
        (f"{SITE}/torch/lib/libtorch_cpu.so", None, TOOLCHAIN),
        (f"{SITE}/torch/lib/libc10.so", MODEL, TOOLCHAIN),  # called from the model's code: still torch's
        (f"{SITE}/onnxruntime/capi/libonnxruntime_providers_shared.so", None, TOOLCHAIN),
        (f"{SITE}/nvidia/cublas/lib/libcublasLt.so.12", None, TOOLCHAIN),
        ("/home/me/proj/build/libtorch_fake.so", MODEL, TOOLCHAIN),  # named as the toolchain's
        ("/home/me/proj/build/libfilters.so", None, MODEL),  # under the project
        ("/opt/dsp/libfilters.so", MODEL, MODEL),  # the model's code called it through ctypes
        (f"{SITE}/scipy/fft/_pocketfft_umath.cpython-311-x86_64-linux-gnu.so", None, LIBRARIES),
        (f"{SITE}/scipy/fft/_pocketfft_umath.cpython-311-x86_64-linux-gnu.so", MODEL, MODEL),
        ("/opt/dsp/libfilters.so", None, MODEL),  # outside site-packages, as owners.Classifier
    ],
)
def test_a_shared_object_is_owned_by_name_place_or_caller(path: str, caller: str | None, owner: str) -> None:
    assert library_owner(path, ROOTS, caller) == owner


def test_libc_libstdcxx_and_the_interpreter_are_looked_past() -> None:
    assert system_library("/usr/lib/x86_64-linux-gnu/libc.so.6")
    assert system_library("/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30")
    assert system_library("/usr/lib/libpython3.11.so.1.0")
    assert not system_library(f"{SITE}/torch/lib/libc10.so")
    assert not system_library("/home/me/proj/libfilters.so")


class FakeLibraries(Libraries):
    def __init__(self, table: dict[str, str]) -> None:
        self._cache = dict(table)

    def of(self, symbol: str) -> str | None:
        return self._cache.get(symbol)


def python_owner(frames):
    filename, line = frames[0]
    return (MODEL if filename.startswith("/home/me/proj") else OTHER), f"{filename}:{line}"


def test_records_are_grouped_by_library_symbol_owner_and_python_site() -> None:
    libs = FakeLibraries(
        {
            "fir_alloc": "/opt/dsp/libfilters.so",
            "c10::alloc_cpu(unsigned long)": f"{SITE}/torch/lib/libc10.so",
            "ffi_call": "/usr/lib/x86_64-linux-gnu/libffi.so.8",
        }
    )
    ctypes_path = [("malloc", "<unknown>", 0), ("fir_alloc", "<unknown>", 0), ("ffi_call", "<unknown>", 0)]
    torch_path = [("malloc", "<unknown>", 0), ("c10::alloc_cpu(unsigned long)", "<unknown>", 0)]
    python_object = [("_PyObject_Malloc", "Objects/obmalloc.c", 1), ("_PyEval_EvalFrameDefault", "Python/ceval.c", 2)]
    caller = [("forward", "/home/me/proj/net.py", 41)]
    out = group(
        [
            (3 * 4096, 3, ctypes_path, caller),
            (3 * 4096, 3, torch_path, caller),
            (3 * 100, 3, python_object, caller),
        ],
        libs,
        python_owner,
        ROOTS,
        calls=3,
    )
    assert out["sites"] == [
        {"library": "libfilters.so", "symbol": "fir_alloc", "owner": MODEL, "where": "/home/me/proj/net.py:41"}
        | {"bytes": 4096, "allocations": 1.0},
        {"library": "libc10.so", "symbol": "c10::alloc_cpu(unsigned long)", "owner": TOOLCHAIN}
        | {"where": "/home/me/proj/net.py:41", "bytes": 4096, "allocations": 1.0},
    ]
    assert out["interpreter"] == 100  # Python's own objects: tracemalloc's to count


def stacked(*sites: tuple[str, str, str, int]) -> dict:
    rows = [
        {"library": lib, "symbol": sym, "owner": who, "where": "net.py:41", "bytes": b} for lib, sym, who, b in sites
    ]
    return {"tool": "memray", "calls": 3, "sites": rows}


def test_native_growth_is_split_as_the_stacks_split_it() -> None:
    o = {"groups": {MODEL: 0, LIBRARIES: 0, TOOLCHAIN: 400 * KB, OTHER: 0}, "native": 60 * KB, "python_malloc": 0}
    assert model_share(o) == 60 * KB  # no stacks: beside 400 KB of toolchain growth, 60 KB clears its variation
    o["native_stacks"] = stacked(("libtorch_cpu.so", "torch::jit::Graph::create", TOOLCHAIN, 45 * KB))
    o["native_stacks"]["sites"].append(stacked(("libfilters.so", "fir_alloc", MODEL, 15 * KB))["sites"][0])
    assert model_share(o) == 15 * KB
    assert toolchain_share(o) == 400 * KB + 45 * KB


def test_native_growth_the_stacks_put_in_torch_is_a_toolchain_leak() -> None:
    base = owners(model=0, toolchain=0, python_malloc=0)
    base["repeat"]["native"] = 64 * KB
    torch = {
        **base,
        "repeat": {**base["repeat"], "native_stacks": stacked(("libc10.so", "c10::alloc_cpu", TOOLCHAIN, 64 * KB))},
    }
    mine = {
        **base,
        "repeat": {**base["repeat"], "native_stacks": stacked(("libfilters.so", "fir_alloc", MODEL, 64 * KB))},
    }
    assert attribute(heap_leak(rate=64 * KB), torch, "eager").kind == TOOLCHAIN_LEAK
    assert attribute(heap_leak(rate=64 * KB), mine, "eager").kind == LEAK
    assert attribute(heap_leak(rate=64 * KB), base, "eager").kind == LEAK  # no stacks: the model's, as before


def test_the_native_line_keeps_sites_over_the_floor_and_names_the_tool() -> None:
    o = {"native_stacks": stacked(("libfilters.so", "fir_alloc", MODEL, 4096), ("libm.so", "tiny", LIBRARIES, 10))}
    (line,) = native_lines(o, "call", floor=100)
    assert line.strip() == "native: libfilters.so `fir_alloc` \u2190 net.py:41 (your code) 4.1 KB/call  [memray]"
    assert native_lines({}, "call") == []
    (err,) = native_lines({"native_stacks": {"tool": "memray", "error": "OSError: disk full"}}, "call")
    assert "no stacks (memray: OSError: disk full)" in err


def test_native_growth_no_stack_saw_is_said_so() -> None:
    o = {"native": 8 * KB, "native_stacks": {"tool": "memray", "calls": 3, "sites": []}}
    (line,) = native_lines(o, "call", floor=1024)
    assert "no stack saw it" in line and "dlsym" in line
    assert native_lines({**o, "native": 0}, "call", floor=1024) == []


def test_a_c_symbol_is_found_in_the_library_that_defines_it(tmp_path) -> None:
    import ctypes
    import shutil
    import subprocess

    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    (tmp_path / "f.c").write_text("#include <stdlib.h>\nvoid *fir_probe_alloc(size_t n) { return malloc(n); }\n")
    so = tmp_path / "libfirprobe.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(tmp_path / "f.c")], check=True)
    ctypes.CDLL(str(so))  # loaded locally (RTLD_LOCAL), as ctypes does: not in the global namespace
    import torch  # noqa: F401 - libc10 mapped, for the namespace lookup

    libs = Libraries()
    assert libs.of("fir_probe_alloc") == str(so.resolve())
    assert (libs.of("c10::alloc_cpu(unsigned long)") or "").rsplit("/", 1)[-1].startswith("libc10")
    assert libs.of("no_such_symbol_anywhere") is None


def test_stacks_run_in_every_stage_but_export_unless_asked(monkeypatch) -> None:
    from bisector.probe.native import wanted

    monkeypatch.delenv("BISECTOR_NATIVE_STACKS", raising=False)
    assert wanted("eager") and wanted("inference") and not wanted("export")
    monkeypatch.setenv("BISECTOR_NATIVE_STACKS", "1")
    assert wanted("export")
    monkeypatch.setenv("BISECTOR_NATIVE_STACKS", "0")
    assert not wanted("eager")
