"""Results cached by `id()` of the input, the input kept in the entry so that a recycled id can
be told apart: every call's input is a new object, so every call adds an entry that keeps the
input and its result alive.

Provenance: https://github.com/wandb/wandb/pull/1729 - artifact entries were cached by the runtime
id of objects; since ids are recycled, the fix kept a reference to the object in the cache (see
also gwastro/pycbc#984, biolab/orange3#4370).
"""

import torch
from torch import nn


class Normaliser(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._stats = {}

    def stats(self, x: torch.Tensor):
        key = id(x)
        hit = self._stats.get(key)
        if hit is None or hit[0] is not x:
            hit = (x, x.mean(dim=0, keepdim=True), x.std(dim=0, keepdim=True) + 1e-5)
            self._stats[key] = hit
        return hit[1], hit[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.stats(x)
        return (x - mean) / std


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = Normaliser()
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=2:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "norm", "stage": "eager", "kind": "leak"}],
    "pattern": "a dict keyed by id() of the input",
    "behaviour": "x = inputs[-1]\ny = net.norm(x)\nassert torch.allclose(y.mean(0), torch.zeros(16), atol=1e-4)",
}
