"""A clean CNN: nothing grows in any stage.

Ground truth: eager, export and inference clean.
"""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,3,H,W"],
    "dims": ["B=1:8", "H=8:64", "W=8:64"],
    "stages": {"eager": "clean", "export": "clean", "inference": "clean"},
    "culprits": [],
}
