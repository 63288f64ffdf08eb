"""A forward that registers a hook on a child on every call: the hooks pile up, and each one
keeps what it captured.

Provenance: https://github.com/huggingface/peft/pull/2761 - X-LoRA registered one forward hook
per forward step during generate and removed only the last, so hooks accumulated.
"""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)
        self.scalings = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def capture(module, args, output):
            self.scalings = output.detach()

        self.enc.register_forward_hook(capture)
        return self.head(torch.relu(self.enc(x)))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "", "stage": "eager", "kind": "leak"}],
    "pattern": "hooks registered per call",
    "behaviour": "assert net.scalings is not None and net.scalings.shape == (inputs[-1].shape[0], 16)",
}
