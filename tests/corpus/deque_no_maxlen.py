"""A deque without maxlen that forward appends to, read by a summary method.

Provenance: https://github.com/pytorch/pytorch/issues/49394 - a training script kept recent
batches in a `deque`; memory rose until the deque's bound was reached, and a deque without one
never stops.
"""

from collections import deque

import torch
from torch import nn


class Smoother(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 16)
        self.recent = deque()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        self.recent.append(y.detach().norm())
        return y

    def summary(self) -> float:
        return float(sum(self.recent) / max(1, len(self.recent)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.smooth = Smoother()
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.smooth(x)))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "smooth", "stage": "eager", "kind": "leak"}],
    "pattern": "deque without maxlen",
    "behaviour": "assert net.smooth.summary() > 0.0",
}
