"""A memory bank whose only growth is one tensor: `memory` concatenates one 256-float row (1 KB)
onto its buffer every call and never drops the oldest (a MoCo queue with its dequeue forgotten).
No object count moves and the heap grows under its floor; only the exact tensor meter sees it.

The bank is read: each call scores the batch against the newest rows, and `negatives()` returns
them. A fix must keep its newest rows, not stop filling it.
"""

import torch
from torch import nn


class MemoryBank(nn.Module):
    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.register_buffer("bank", torch.zeros(0, dim))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        key = nn.functional.normalize(emb.detach().mean(dim=0, keepdim=True), dim=1)
        self.bank = torch.cat([self.bank, key])
        return emb @ self.negatives(4).T

    def negatives(self, n: int) -> torch.Tensor:
        return self.bank[-n:]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256))
        self.memory = MemoryBank()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.memory(self.encoder(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,64"],
    "dims": ["B=1:8"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "memory", "stage": "eager", "kind": "leak"}],
}
