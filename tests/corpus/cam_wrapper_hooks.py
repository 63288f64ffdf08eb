"""A class-activation-map wrapper that registers its activation hook each time it is called.

Provenance: https://github.com/shinkyo0513/Towards-Visually-Explaining-Video-Understanding-Networks-With-Perturbation/issues/10
- grad_cam registered its forward and backward hooks again on every run, so they piled up
(also https://github.com/jacobgil/pytorch-grad-cam/issues/132).
"""

import torch
from torch import nn


class Net(nn.Module):
    """Returns the logits; `self.activation` holds the target layer's last activation for the CAM."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))
        self.classifier = nn.Linear(16, 3)
        self.activation = None

    def _save(self, module, args, output):
        self.activation = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.features[2].register_forward_hook(self._save)
        return self.classifier(self.features(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "", "stage": "eager", "kind": "leak"}],
    "pattern": "hooks registered per call",
    "behaviour": "assert net.activation is not None and net.activation.shape[-1] == 16",
}
