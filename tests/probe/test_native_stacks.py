"""The traced probe's native stacks name the library and the function that leak, and whose they are.

A tiny C library, built here with the machine's compiler, leaks a fixed size per call; the model loads
it through ctypes. A second library of the same leak, named as the toolchain's (libtorch_fake.so), is
the toolchain's. Skipped without a C compiler or without memray.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bisector.common.units import format_bytes
from bisector.judge.native import native_lines
from bisector.model.schedule import ScheduleProfile, build_schedule
from bisector.model.spec import build_input_plan, parse_model_spec
from bisector.probe.pool import ProbePool
from bisector.probe.types import ProbeOk, ProbeOptions, ProbeRequest

pytestmark = pytest.mark.probe
LEAK = 4096
CALLS_PER_PASS = 1
TRACED = ScheduleProfile(shapes=1, warmup_passes=1, repeat_passes=4, novel=0, within=0)

C_SOURCE = """
#include <stdlib.h>
#include <string.h>
void *{name}(size_t n) {{ char *p = malloc(n); if (p) memset(p, 1, n); return p; }}
"""

MODEL = """
import ctypes
import os

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
_filters = ctypes.CDLL(os.path.join(HERE, "libfilters.so"))
_filters.fir_alloc.restype = ctypes.c_void_p
_filters.fir_alloc.argtypes = [ctypes.c_size_t]
_fake = ctypes.CDLL(os.path.join(HERE, "libtorch_fake.so"))
_fake.torch_scratch.restype = ctypes.c_void_p
_fake.torch_scratch.argtypes = [ctypes.c_size_t]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        _filters.fir_alloc({leak})
        _fake.torch_scratch({leak})
        return self.lin(x)
"""


def line_of(text: str) -> int:
    """The model file's line that calls ``text`` (where the Python site must point)."""
    return next(i for i, line in enumerate(MODEL.splitlines(), 1) if text in line and "(" in line and "=" not in line)


def build(folder: Path, name: str, symbol: str) -> None:
    src = folder / f"{name}.c"
    src.write_text(C_SOURCE.format(name=symbol))
    subprocess.run(["cc", "-shared", "-fPIC", "-O0", "-o", str(folder / f"{name}.so"), str(src)], check=True)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    pytest.importorskip("memray")
    project = tmp_path_factory.mktemp("native_project")
    build(project, "libfilters", "fir_alloc")
    build(project, "libtorch_fake", "torch_scratch")
    (project / "model.py").write_text(MODEL.format(leak=LEAK))
    spec = parse_model_spec(f"{project / 'model.py'}:Net")
    plan = build_input_plan(["x=B,8"], ["B=2"], spec)
    request = ProbeRequest(
        spec, plan, "eager", build_schedule(plan.dims, TRACED), ProbeOptions(owners=1), label="native"
    )
    env = {**os.environ, "BISECTOR_NATIVE_STACKS": "1"}  # the suite runs without them (conftest.py)
    with ProbePool(tmp_path_factory.mktemp("native_pool"), timeout_s=120, env=env, preload=("torch",)) as pool:
        result = pool.run(request)
    assert isinstance(result, ProbeOk), result
    return {"project": str(project), **result.curve.meta["owners"]["repeat"]}


def test_the_models_ctypes_library_and_function_are_named_as_the_models(stacks: dict) -> None:
    sites = stacks["native_stacks"]["sites"]
    mine = [s for s in sites if s["library"] == "libfilters.so"]
    where = f"{stacks['project']}/model.py:{line_of('_filters.fir_alloc')}"
    assert [(s["symbol"], s["owner"], s["where"], s["bytes"]) for s in mine] == [("fir_alloc", "model", where, LEAK)]


def test_the_same_leak_in_a_toolchain_library_is_the_toolchains(stacks: dict) -> None:
    sites = stacks["native_stacks"]["sites"]
    theirs = [s for s in sites if s["library"] == "libtorch_fake.so"]
    assert [(s["symbol"], s["owner"], s["bytes"]) for s in theirs] == [("torch_scratch", "toolchain", LEAK)]


def test_the_report_line_names_library_function_site_and_owner(stacks: dict) -> None:
    (line,) = native_lines(stacks, "call")
    mine, theirs = line_of("_filters.fir_alloc"), line_of("_fake.torch_scratch")
    model, leak = f"{stacks['project']}/model.py", format_bytes(LEAK)
    assert f"libfilters.so `fir_alloc` \u2190 {model}:{mine} (your code) {leak}/call" in line
    assert f"libtorch_fake.so `torch_scratch` \u2190 {model}:{theirs} (toolchain) {leak}/call" in line
    assert line.endswith("[memray]")
