"""A list appended to in a submodule's forward: every call keeps its output alive.

Ground truth: `blocks.1` leaks in eager. Export is clean with torch's default exporter:
torch.export snapshots every module's attributes before tracing and restores them after
(`_detect_attribute_assignment` in torch/_functorch/_aot_autograd/frontend_utils.py), so a list
on a module is rolled back; the TorchScript-based exporter does not, and leaks there. Inference is
clean (ONNX Runtime never runs the Python forward).
"""

import torch
from torch import nn


class Recorder(nn.Module):
    """Keeps every output "for debugging" - and never lets go of one."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.history: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.proj(x))
        self.history.append(y)
        return y


class Net(nn.Module):
    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.blocks = nn.Sequential(nn.Linear(dim, dim), Recorder(dim), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,32"],
    "dims": [],
    "stages": {"eager": "leak", "export": "clean", "inference": "clean"},
    "culprits": [{"region": "blocks.1", "stage": "eager", "kind": "leak"}],
}
