import torch
from torch import nn


class Scorer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(feats)
