"""A native leak on an export-only code path: `encoder.1` mallocs 64 KB through ctypes whenever
`torch.onnx.is_in_onnx_export()` is true ("a lookup table for the exported kernel") and never
frees it. Eager runs never take that path; ONNX Runtime never runs Python.

Ground truth: `encoder.1` leaks in export (with torch's default exporter); eager and inference
are clean.
"""

import ctypes
import ctypes.util

import torch
from torch import nn

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
LEAK_BYTES = 64 * 1024


class ExportTable(nn.Linear):
    """A Linear that builds a C-side table when it is being exported."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            _libc.malloc(LEAK_BYTES)
        return super().forward(x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(16, 32), ExportTable(32, 32), nn.ReLU(), nn.Linear(32, 32))
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


BISECTOR_TRUTH = {
    "fixable": False,  # native memory: no fixer edits C allocations
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=1:8"],
    "stages": {"eager": "clean", "export": "leak", "inference": "clean"},
    "culprits": [{"region": "encoder.1", "stage": "export", "kind": "leak"}],
}
