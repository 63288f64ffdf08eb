"""A small native leak deep in a residual CNN: `layers.2.1.scratch` mallocs 8 KB per call through
ctypes and never frees it. No Python object is kept and RSS moves in pages and allocator caching:
only the exact heap meter (glibc mallinfo2) sees 8 KB a call. At one call a second that is
690 MB a day.

Ground truth: `layers.2.1.scratch` leaks in eager; inference is clean (the ONNX graph has no
ctypes call). Export is not stated: 8 KB per export is under the export stage's floor target.
"""

import ctypes
import ctypes.util

import torch
from torch import nn

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
LEAK_BYTES = 8 * 1024


class Scratch(nn.Module):
    """Reserves a C buffer "for the fused kernel", and forgets it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _libc.malloc(LEAK_BYTES)
        return x


class Block(nn.Module):
    def __init__(self, ch: int, leak: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.scratch = Scratch() if leak else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(self.scratch(x)))))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layers = nn.Sequential(
            nn.Sequential(Block(8), Block(8)),
            nn.Sequential(Block(8), Block(8)),
            nn.Sequential(Block(8), Block(8, leak=True)),
        )
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(torch.relu(self.stem(x)))
        return self.head(y.mean(dim=(2, 3)))


BISECTOR_TRUTH = {
    "fixable": False,  # native memory: no fixer edits C allocations
    "spec": "Net",
    "inputs": ["x=B,3,H,W"],
    "dims": ["B=1:4", "H=8:32", "W=8:32"],
    "stages": {"eager": "leak", "inference": "clean"},
    "culprits": [{"region": "layers.2.1.scratch", "stage": "eager", "kind": "leak"}],
}
