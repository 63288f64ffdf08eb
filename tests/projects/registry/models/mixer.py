"""Mixer: mixes each token's 5 channels into weights.

Feature: the weights of each token sum to 1 (the blending step downstream relies on it)."""

import torch
from torch import nn


class Mixer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(5, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens).softmax(-1)
