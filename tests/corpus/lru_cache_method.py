"""lru_cache on a method: the cache is on the class, so it keeps `self` and every position table
for every length it was asked for.

Provenance: https://github.com/PyCQA/flake8/pull/1573 - "fix memory leak caused by lru_cache of a
method" (ruff's B019 warns of the same: https://github.com/astral-sh/ruff/issues/12917).
"""

from functools import lru_cache

import torch
from torch import nn


class SinusoidalPositions(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.dim = dim

    @lru_cache(maxsize=None)
    def table(self, length: int) -> torch.Tensor:
        pos = torch.arange(length, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, self.dim, 2, dtype=torch.float32) * (-4.0 / self.dim))
        return torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table(x.shape[1])


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, 16)
        self.pos = SinusoidalPositions()
        self.out = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.pos(self.inp(x)))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,T,16"],
    "dims": ["B=1:2", "T=4:96"],
    "stages": {"eager": "shape-growth"},
    "culprits": [{"region": "pos", "stage": "eager", "kind": "shape-growth"}],
    "pattern": "lru_cache(maxsize=None) on a method",
    "behaviour": (
        "t = net.pos.table\n"
        "a = t(7); b = t(7)\n"
        "assert a is b and a.shape == (7, 16)"
    ),
}
