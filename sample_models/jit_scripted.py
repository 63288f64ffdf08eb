"""A factory returning a `torch.jit.script`-ed module (pytorch/pytorch#82532).

Exporting a scripted module with the TorchScript-based exporter leaves two tensors behind per
export (the parameter wrappers torch clones at torchscript_exporter/utils.py, held by its C++
state). This is torch's leak: the tool reports it as `toolchain-leak`, naming torch's line; the
model's own code is clean.
Ground truth (with --exporter torchscript): export is a toolchain-leak (stated clean: the model's
code keeps nothing); eager clean.
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
    # torch's own leak: worked around by exporting in a child process, or the eager module (the
    # torch.export path cannot export a ScriptModule).
    "fixable": True,
    "spec": "make",
    "inputs": ["x=B,256"],
    "dims": ["B=1:8"],
    "exporter": "torchscript",
    "stages": {"eager": "clean", "export": "clean"},
    "culprits": [],
}
