"""A factory returning a `torch.jit.script`-ed module (pytorch/pytorch#82532).

Exporting a scripted module with the TorchScript-based exporter leaves two tensors behind per
export. This is torch's leak, reproduced here so the tool shows what it measures on a scripted
model; the model's own code is clean.
Ground truth (with --exporter torchscript): export leaks; eager clean.
"""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(256, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


def make() -> torch.jit.ScriptModule:
    return torch.jit.script(Net().eval())


BISECTOR_TRUTH = {
    "fixable": False,  # torch's own leak; the torch.export path cannot export a ScriptModule
    "spec": "make",
    "inputs": ["x=B,256"],
    "dims": ["B=1:8"],
    "exporter": "torchscript",
    "stages": {"eager": "clean", "export": "leak"},
    "culprits": [{"region": "", "stage": "export", "kind": "leak"}],
}
