"""GPU-only: `cache` keeps a 16 MB CUDA tensor from every call.

Ground truth (CUDA device): `cache` leaks in eager (GPU memory grows every call).
"""

import torch
from torch import nn


class KeepOnGpu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.kept: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.kept.append(torch.empty(4 * 1024 * 1024, device=x.device).fill_(1.0))  # 16 MB
        return x


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 64)
        self.cache = KeepOnGpu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cache(self.fc(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,64"],
    "dims": ["B=1:8"],
    "device": "cuda",
    "gpu_only": True,
    "stages": {"eager": "leak"},
    "culprits": [{"region": "cache", "stage": "eager", "kind": "leak"}],
}
