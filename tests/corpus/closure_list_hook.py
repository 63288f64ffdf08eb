"""A hook made by a factory whose closure keeps a list: nothing on the module names it, only the
closure cell of the registered function.

Provenance: https://github.com/jacobgil/pytorch-grad-cam/issues/88 - hooks holding references back
into the CAM object created reference chains that kept activations alive.
"""

import torch
from torch import nn


def make_recorder(store):
    def record(module, args, output):
        store.append(output.detach())

    return record


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(16, 16)
        self.head = nn.Linear(16, 2)
        self.layer.register_forward_hook(make_recorder([]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.layer(x)))

    def recorded(self) -> list:
        hook = next(iter(self.layer._forward_hooks.values()))
        return hook.__closure__[0].cell_contents


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "layer", "stage": "eager", "kind": "leak"}],
    "pattern": "a list kept in a closure cell",
    "behaviour": "r = net.recorded()\nassert len(r) >= 1 and r[-1].shape[-1] == 16",
}
