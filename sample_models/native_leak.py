"""A native leak: `stem.1` mallocs 2 MB through ctypes on every call and never frees it.

Only RSS sees it: no Python object is kept, tracemalloc sees nothing.
Ground truth: `stem.1` leaks in eager and export (export runs forward); inference is clean.
"""

import ctypes
import ctypes.util

import torch
from torch import nn

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.memset.restype = ctypes.c_void_p
_libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
LEAK_BYTES = 2 * 1024 * 1024


class NativeScratch(nn.Module):
    """Asks C for scratch space "for speed", forgets to free it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ptr = _libc.malloc(LEAK_BYTES)
        _libc.memset(ptr, 1, LEAK_BYTES)  # touched, so it is resident
        return x


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(16, 16), NativeScratch(), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(x))


BISECTOR_TRUTH = {
    "fixable": False,  # native memory: no fixer edits C allocations
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": [],
    "stages": {"eager": "leak", "export": "leak", "inference": "clean"},
    "culprits": [
        {"region": "stem.1", "stage": "eager", "kind": "leak"},
        {"region": "stem.1", "stage": "export", "kind": "leak"},
    ],
}
