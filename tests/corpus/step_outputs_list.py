"""Per-step outputs kept on the module for an epoch-end hook that computes a metric and is meant
to clear them, but the clear was forgotten.

Provenance: https://github.com/Lightning-AI/pytorch-lightning/pull/16520 - Lightning 2.0 removed
the memory-retaining epoch-end hooks; users now append `self.validation_step_outputs` themselves
and must clear it (review in ray-project/ray#38039 caught the missing clear).
"""

import torch
from torch import nn


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(16, 3)
        self.validation_step_outputs = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.layer(x)
        self.validation_step_outputs.append(logits.detach().softmax(-1).max(-1).values.mean())
        return logits

    def on_validation_epoch_end(self) -> float:
        return float(torch.stack(self.validation_step_outputs).mean())


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(16, 16)
        self.cls = Classifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(torch.relu(self.stem(x)))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "cls", "stage": "eager", "kind": "leak"}],
    "pattern": "a list of step outputs never cleared",
    "behaviour": "v = net.cls.on_validation_epoch_end()\nassert 1 / 3 <= v <= 1.0",
}
