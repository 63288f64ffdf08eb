"""Activations collected by a hook registered once, into a list no one clears.

Provenance: https://github.com/jacobgil/pytorch-grad-cam/issues/71 - ActivationsAndGradients
appended every output to self.activations, which accumulated in device memory.
"""

import torch
from torch import nn


class ActivationsAndGradients:
    def __init__(self, layer: nn.Module) -> None:
        self.activations = []
        layer.register_forward_hook(self.save_activation)

    def save_activation(self, module, args, output):
        self.activations.append(output.detach())


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16))
        self.head = nn.Linear(16, 2)
        self.recorder = ActivationsAndGradients(self.body[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "body.1", "stage": "eager", "kind": "leak"}],
    "pattern": "a hook's list that only grows",
    "behaviour": "assert net.recorder.activations and net.recorder.activations[-1].shape == outputs[-1].shape[:-1] + (16,)",
}
