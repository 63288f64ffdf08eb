"""A running total kept on the module as a tensor with its autograd history: each call chains
the previous graph onto the new one, so every call's graph stays alive.

Provenance: https://discuss.pytorch.org/t/gpu-memory-increase-while-i-wanna-to-backward-with-accumulative-loss/43284
- a loss accumulated with `loss += loss_part` across iterations kept growing GPU memory (the
PyTorch FAQ's "accumulating history across your training loop").
"""

import torch
from torch import nn


class Regulariser(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 16)
        self.total_penalty = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        self.total_penalty = self.total_penalty + y.pow(2).mean()
        return y


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.reg = Regulariser()
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.reg(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "reg", "stage": "eager", "kind": "leak"}],
    "pattern": "a tensor that keeps its autograd history",
    "behaviour": "assert float(net.reg.total_penalty) > 0.0",
    # The history is kept only with autograd on, as in the training loop of the report; eager
    # runs under no_grad unless told, so a user chasing this runs with --keep-autograd.
    "flags": ["--keep-autograd"],
}
