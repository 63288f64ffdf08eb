"""Image tagger: scores 6 tags for a batch of small RGB crops.

Feature: the drift monitor calls `pop_stats()` now and then; it returns the mean activation of
each batch seen since its last call (the most recent ones), and never holds more than a few.
"""

import torch
from torch import nn


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 6)
        self.stats = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).mean(dim=(2, 3))
        self.stats.append(h.mean(dim=0).detach())  # for the drift monitor
        return self.head(h)

    def pop_stats(self) -> list:
        """The statistics recorded since the last call, oldest first."""
        out = list(self.stats)
        self.stats = []
        return out
