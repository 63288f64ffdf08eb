"""Per-layer statistics appended to a module-level defaultdict(list) by a helper that forward
calls, read by a report function.

Provenance: https://github.com/wandb/wandb/issues/354 - logging loss tensors (not `.item()`) on
every step held them, and memory grew by gigabytes within an hour.
"""

from collections import defaultdict

import torch
from torch import nn

_METRICS = defaultdict(list)


def log_metric(name: str, value: torch.Tensor) -> None:
    _METRICS[name].append(value.detach())


def report() -> dict:
    return {k: float(torch.stack(v).mean()) for k, v in _METRICS.items()}


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ff = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.ff(x))
        log_metric("block.act_mean", y.mean())
        return y


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.out = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.block(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "block", "stage": "eager", "kind": "leak"}],
    "pattern": "module-level defaultdict(list) of metrics",
    "behaviour": "r = module.report()\nassert 'block.act_mean' in r and r['block.act_mean'] >= 0.0",
}
