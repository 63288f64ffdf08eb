"""A CNN with dynamic batch, height and width, run by ONNX Runtime on ever new input sizes.

The CPU arena grows whenever an input larger than any before arrives and never gives memory
back; it stays flat while shapes repeat, and on new shapes no larger than the largest seen.
That is shape-growth bounded by the largest shape, not a per-call leak
(microsoft/onnxruntime#11118, triton-inference-server/onnxruntime_backend#102).
Ground truth: inference shape-growth (bounded).
Eager is not stated: with 41 MB activations at the largest shape, RSS still keeps ~5-7 MB more
after the largest shapes even with malloc_trim (allocator residue that grows with the largest
shape), which sits right on the 5 MB noise band, so its verdict depends on the seed.
"""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(2 * width, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,3,H,W"],
    "dims": ["B=1:16", "H=5:100", "W=5:100"],
    "stages": {"inference": "shape-growth"},
    "culprits": [{"region": "", "stage": "inference", "kind": "shape-growth"}],
}
