"""A cache keyed by input shape: positional tables built once per (H, W) and never evicted.

Ground truth: `pos` shows shape-growth in eager (flat while shapes repeat, +1 table per new
shape, unbounded); inference is clean. (The export stage is not stated: a cache of tensors made
while tracing is the exporter's business, and shows differently per exporter.)
"""

import torch
from torch import nn


class PositionTable(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.cache: dict[tuple[int, int], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.shape[-2], x.shape[-1])
        if key not in self.cache:
            h, w = key
            grid = torch.arange(h * w, dtype=torch.float32, device=x.device).reshape(1, 1, h, w)
            freqs = torch.arange(1, self.channels + 1, dtype=torch.float32, device=x.device).reshape(1, -1, 1, 1)
            self.cache[key] = torch.sin(grid / freqs)
        return x + self.cache[key]


class Net(nn.Module):
    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.pos = PositionTable(channels)
        self.head = nn.Conv2d(channels, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pos(self.stem(x)))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,3,H,W"],
    "dims": ["B=1:2", "H=16:96", "W=16:96"],
    "stages": {"eager": "shape-growth", "inference": "clean"},
    "culprits": [{"region": "pos", "stage": "eager", "kind": "shape-growth"}],
}
