"""Scorer: one relevance score per row of 6 features.

Feature: the ranking service sorts by `scores[:, 0]`, so each row gets exactly one score."""

import torch
from torch import nn


class Scorer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(feats)
