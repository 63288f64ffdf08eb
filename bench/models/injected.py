"""A small model with a native leak injected for bench/sensitivity.py: `leak_bytes` mallocs per
call (eager), per export (only while torch.onnx.is_in_onnx_export()), or per ONNX Runtime run
(InferenceSession.run patched in this probe's process, standing in for a runtime leak).
`leak_bytes=0` is the clean model."""

import ctypes
import ctypes.util

import torch
from torch import nn

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]


class Leak(nn.Module):
    def __init__(self, leak_bytes: int, stage: str) -> None:
        super().__init__()
        self.leak_bytes = leak_bytes
        self.stage = stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        exporting = torch.onnx.is_in_onnx_export()
        if self.leak_bytes and ((self.stage == "eager" and not exporting) or (self.stage == "export" and exporting)):
            _libc.malloc(self.leak_bytes)
        return x


class Net(nn.Module):
    def __init__(self, leak_bytes: int = 0, stage: str = "eager") -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), Leak(leak_bytes, stage), nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, 8)
        if leak_bytes and stage == "inference":
            _patch_runtime(leak_bytes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _patch_runtime(leak_bytes: int) -> None:
    import onnxruntime as ort

    run = ort.InferenceSession.run

    def leaky_run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _libc.malloc(leak_bytes)
        return run(self, *args, **kwargs)

    ort.InferenceSession.run = leaky_run
