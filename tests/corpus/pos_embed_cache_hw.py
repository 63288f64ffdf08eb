"""A 2-D sin-cos position embedding cached per (level, h, w) in a dict on the encoder.

Provenance: https://github.com/LibreYOLO/libreyolo/pull/541 - D-FINE's encoder cached position
embeddings in `_pos_embed_cache[(enc_ind, h, w)]`, flagged in review as unbounded across
resolutions.
"""

import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.Conv2d(3, dim, 1)
        self._pos_embed_cache = {}

    @staticmethod
    def build_2d_sincos(h: int, w: int, dim: int) -> torch.Tensor:
        gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        omega = 1.0 / (10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4)))
        out_y, out_x = gy.flatten()[:, None] * omega, gx.flatten()[:, None] * omega
        return torch.cat([out_x.sin(), out_x.cos(), out_y.sin(), out_y.cos()], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.proj(x).flatten(2).transpose(1, 2)
        key = (0, x.shape[-2], x.shape[-1])
        pos = self._pos_embed_cache.get(key)
        if pos is None:
            pos = self.build_2d_sincos(x.shape[-2], x.shape[-1], self.dim)
            self._pos_embed_cache[key] = pos
        return f + pos


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)).mean(1)


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,3,H,W"],
    "dims": ["B=1:2", "H=4:48", "W=4:48"],
    "stages": {"eager": "shape-growth"},
    "culprits": [{"region": "encoder", "stage": "eager", "kind": "shape-growth"}],
    "pattern": "a dict memo on the module keyed by shape (.get)",
    "behaviour": (
        "x = torch.zeros(1, 3, 6, 5)\n"
        "net.encoder(x)\n"
        "assert net.encoder._pos_embed_cache.get((0, 6, 5)) is not None"
    ),
}
