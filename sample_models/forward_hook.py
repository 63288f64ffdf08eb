"""A forward hook left registered: it collects every activation of `features.2` into a
module-level list.

Ground truth: `features.2` leaks in eager and export (hooks fire while exporting too, and a
module-level list is not among the module attributes torch.export restores); inference is clean.
"""

import torch
from torch import nn

ACTIVATIONS: list = []


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(8, 4)
        # Meant for one debugging session, never removed.
        self.features[2].register_forward_hook(lambda module, args, output: ACTIVATIONS.append(output))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,3,H,W"],
    "dims": ["B=1:4", "H=8:32", "W=8:32"],
    "stages": {"eager": "leak", "export": "leak", "inference": "clean"},
    "culprits": [
        {"region": "features.2", "stage": "eager", "kind": "leak"},
        {"region": "features.2", "stage": "export", "kind": "leak"},
    ],
}
