"""A helper with a mutable default argument used as a cache: `def f(t, cache={})` keeps one
entry per length for the life of the process.

Provenance: https://github.com/getnikola/nikola/pull/1532 - "Avoiding memory leaks": mutable
default arguments kept growing across calls (also trackmania-rl/tmrl#116, `def func(s, cache={})`).
"""

import torch
from torch import nn


def length_penalty(t: int, alpha: float = 0.6, cache={}) -> torch.Tensor:
    if t not in cache:
        cache[t] = ((5.0 + torch.arange(1, t + 1, dtype=torch.float32)) / 6.0) ** alpha
    return cache[t]


class Scorer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).squeeze(-1) / length_penalty(x.shape[1])


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scorer = Scorer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scorer(x)


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,T,16"],
    "dims": ["B=1:2", "T=4:96"],
    "stages": {"eager": "shape-growth"},
    "culprits": [{"region": "scorer", "stage": "eager", "kind": "shape-growth"}],
    "pattern": "a mutable default argument used as a cache",
    "behaviour": "a = module.length_penalty(13); b = module.length_penalty(13)\nassert a is b and a.shape == (13,)",
}
