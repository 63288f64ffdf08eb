"""A class-level registry that every instance's forward appends to for later inspection.

Provenance: https://github.com/faif/python-patterns/issues/275 - a class-level registry dict kept
direct references, so nothing registered was ever garbage collected.
"""

import torch
from torch import nn


class Probe(nn.Module):
    """Records each output for a debugging dashboard that reads `Probe.records`."""

    records = []

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Probe.records.append((self.name, x.detach().mean()))
        return x

    @classmethod
    def last(cls, name: str) -> float:
        return float([v for n, v in cls.records if n == name][-1])


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 16)
        self.probe = Probe("fc1")
        self.fc2 = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.probe(torch.relu(self.fc1(x))))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "probe", "stage": "eager", "kind": "leak"}],
    "pattern": "a class-level registry",
    "behaviour": "assert module.Probe.last('fc1') >= 0.0",
}
