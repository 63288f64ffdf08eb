"""Denoiser: cleans photos of any height and width; the output has the input's size.

Served from ONNX Runtime on ever new sizes up to 96x96, so the session's arena grows to the
largest of them and stays there (bounded growth: its ceiling is what the team budgets for)."""

import torch
from torch import nn


class Denoiser(nn.Module):
    def __init__(self, width: int = 24) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 3, 3, padding=1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image - self.body(image)
