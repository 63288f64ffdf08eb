"""A loss module that keeps a logging output per call, holding the loss tensor with its graph,
in a list that the reporting code reads at the end.

Provenance: https://github.com/deepmodeling/Uni-Mol/issues/173 - `logging_output = {"loss": loss}`
kept the loss with its grad_fn; memory rose every step until `loss.data` was logged instead.
"""

import torch
from torch import nn


class LossWithLogging(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 4)
        self.logging_outputs = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.proj(x)
        loss = logits.logsumexp(-1).mean()
        self.logging_outputs.append({"loss": loss, "sample_size": x.shape[0]})
        return logits

    def reduce_metrics(self) -> float:
        n = sum(o["sample_size"] for o in self.logging_outputs)
        return float(sum(float(o["loss"]) * o["sample_size"] for o in self.logging_outputs) / max(1, n))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(16, 16)
        self.criterion = LossWithLogging()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.criterion(torch.relu(self.body(x)))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "criterion", "stage": "eager", "kind": "leak"}],
    "pattern": "a list of per-call records holding tensors",
    "behaviour": "assert net.criterion.reduce_metrics() > 0.0",
}
