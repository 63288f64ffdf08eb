"""A custom autograd.Function whose `symbolic` keeps what it builds in a module-level list.

Every TorchScript-based export calls `symbolic` and leaves a 16 KB tensor (and a graph value)
behind. Eager runs never call it; the torch.export-based exporter never calls it either.
Ground truth (with --exporter torchscript): `blocks.0.act` leaks in export; eager and inference clean.
"""

import torch
from torch import nn

_BUILT: list = []  # "kept for debugging the export"


class ScaledGeluFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return torch.nn.functional.gelu(x) * 1.5

    @staticmethod
    def symbolic(g, x):  # noqa: ANN001, ANN205
        scale = torch.full((4096,), 1.5)
        out = g.op("Mul", g.op("Gelu", x), g.op("Constant", value_t=torch.tensor(1.5)))
        _BUILT.append((scale, out))
        return out


class ScaledGelu(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ScaledGeluFn.apply(x)


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.act = ScaledGelu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class Net(nn.Module):
    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.blocks = nn.Sequential(Block(dim), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,32"],
    "dims": [],
    "exporter": "torchscript",
    "stages": {"eager": "clean", "export": "leak", "inference": "clean"},
    "culprits": [{"region": "blocks.0.act", "stage": "export", "kind": "leak"}],
}
