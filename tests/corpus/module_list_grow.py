"""A growing network that adds a new adapter layer to an nn.ModuleList inside forward whenever a
new input width is seen: one set of parameters per new shape.

Provenance: https://github.com/growingnet/gromo/issues/96 - a growing Conv2d module leaked memory
as its added parts kept references across forwards.
"""

import torch
from torch import nn


class GrowingHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.adapters = nn.ModuleList()
        self.widths = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        if t not in self.widths:
            self.widths.append(t)
            self.adapters.append(nn.Linear(t, 4))
        return self.adapters[self.widths.index(t)](x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = GrowingHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,T"],
    "dims": ["B=1:2", "T=8:200"],
    "stages": {"eager": "shape-growth"},
    "culprits": [{"region": "head", "stage": "eager", "kind": "shape-growth"}],
    "pattern": "an nn.ModuleList grown in forward",
    "behaviour": "y = net(torch.zeros(2, 9))\nassert y.shape == (2, 4) and 9 in net.head.widths",
}
