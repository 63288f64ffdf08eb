"""An anchor generator that caches anchors per feature-map size on the module: one entry per new
input resolution, never evicted.

Provenance: https://github.com/pytorch/vision/issues/1689 - FasterRCNN leaked on varying aspect
ratios through AnchorGenerator's `_cache` (see also vision#1657 and vision#3667).
"""

import torch
from torch import nn


class AnchorGenerator(nn.Module):
    def __init__(self, sizes=(8.0, 16.0)) -> None:
        super().__init__()
        self.sizes = torch.tensor(sizes)
        self._cache = {}

    def grid_anchors(self, h: int, w: int) -> torch.Tensor:
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        centers = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4)
        half = torch.stack([-self.sizes, -self.sizes, self.sizes, self.sizes], dim=-1) / 2
        return (centers + half).reshape(-1, 4)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        key = (feature.shape[-2], feature.shape[-1])
        if key not in self._cache:
            self._cache[key] = self.grid_anchors(*key)
        return self._cache[key]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(3, 8, 3, padding=1)
        self.anchors = AnchorGenerator()
        self.box = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.box(torch.relu(self.backbone(x)))
        a = self.anchors(f)
        return f.flatten(2).mean(-1) + a.mean()


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,3,H,W"],
    "dims": ["B=1:2", "H=8:64", "W=8:64"],
    "stages": {"eager": "shape-growth"},
    "culprits": [{"region": "anchors", "stage": "eager", "kind": "shape-growth"}],
    "pattern": "a dict on the module keyed by input size",
    "behaviour": (
        "f = torch.zeros(1, 8, 5, 7)\n"
        "a = net.anchors(f); b = net.anchors(f)\n"
        "assert a is b and a.shape == (5 * 7 * 2, 4)"
    ),
}
