"""Learned per-length scales created lazily in an nn.ParameterList the first time a sequence
length is seen.

Provenance: https://github.com/growingnet/gromo/issues/135 - a growing module kept `self.activity`
attached to the graph; growing parts stored per forward kept memory alive.
"""

import torch
from torch import nn


class LengthScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scales = nn.ParameterList()
        self.index = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        if t not in self.index:
            self.index[t] = len(self.scales)
            self.scales.append(nn.Parameter(torch.ones(t, 1)))
        return x * self.scales[self.index[t]]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, 16)
        self.scale = LengthScale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.inp(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,T,16"],
    "dims": ["B=1:2", "T=4:200"],
    "stages": {"eager": "shape-growth"},
    "culprits": [{"region": "scale", "stage": "eager", "kind": "shape-growth"}],
    "pattern": "an nn.ParameterList grown in forward",
    "behaviour": "y = net(torch.zeros(1, 5, 16))\nassert y.shape == (1, 5, 16) and 5 in net.scale.index",
}
