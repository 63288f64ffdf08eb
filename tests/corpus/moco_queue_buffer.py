"""A MoCo-style queue of keys kept in a buffer, enqueued with torch.cat and never dequeued.
The object count stays flat: one tensor, one row bigger per sample.

Provenance: https://github.com/facebookresearch/moco/blob/main/moco/builder.py - MoCo keeps a
fixed-size queue and overwrites its oldest keys in `_dequeue_and_enqueue`; forget the dequeue and
the queue grows by a batch of keys per step.
"""

import torch
from torch import nn


class ContrastiveHead(nn.Module):
    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.key = nn.Linear(64, dim)
        self.register_buffer("queue", torch.zeros(0, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = nn.functional.normalize(self.key(x), dim=1)
        logits = k @ self.queue.T if self.queue.numel() else k.new_zeros(k.shape[0], 1)
        self.queue = torch.cat([self.queue, k.detach()], dim=0)
        return logits.mean(dim=1, keepdim=True)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(64, 64)
        self.head = ContrastiveHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.backbone(x)))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,64"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "head", "stage": "eager", "kind": "leak"}],
    "pattern": "a tensor grown by torch.cat (buffer)",
    # The queue still holds the newest keys: the last batch's keys are its last rows.
    "behaviour": (
        "x = inputs[-1]\n"
        "net(x)\n"
        "k = torch.nn.functional.normalize(net.head.key(torch.relu(net.backbone(x))), dim=1)\n"
        "assert net.head.queue.shape[0] >= x.shape[0] and torch.allclose(net.head.queue[-x.shape[0]:], k)"
    ),
}
