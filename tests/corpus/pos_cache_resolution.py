"""A position-embedding cache keyed by a resolution string in a pixel decoder: one GPU tensor per
new resolution, kept for good.

Provenance: https://github.com/vllm-project/vllm-omni/pull/5965 - PiD's pixel decoder kept
`_pos_cache[key]` per (height, width); review asked to bound it ("each new resolution permanently
retains another GPU tensor"), and the author limited it to 8.
"""

import torch
from torch import nn


class PixelDecoder(nn.Module):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.hidden = hidden
        self.out = nn.Conv2d(hidden, 3, 1)
        self._pos_cache = {}

    def positions(self, h: int, w: int) -> torch.Tensor:
        key = f"{h}x{w}"
        if key in self._pos_cache:
            return self._pos_cache[key]
        gy, gx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        freq = torch.arange(1, self.hidden // 2 + 1, dtype=torch.float32)[:, None, None]
        pos = torch.cat([(gy * freq).sin(), (gx * freq).cos()], dim=0)
        self._pos_cache[key] = pos
        return pos

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(z + self.positions(z.shape[-2], z.shape[-1]))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.decoder = PixelDecoder()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["z=B,8,H,W"],
    "dims": ["B=1:2", "H=4:48", "W=4:48"],
    "stages": {"eager": "shape-growth"},
    "culprits": [{"region": "decoder", "stage": "eager", "kind": "shape-growth"}],
    "pattern": "a dict memo on the module keyed by a string of the shape",
    "behaviour": "a = net.decoder.positions(6, 7); b = net.decoder.positions(6, 7)\nassert a is b and a.shape == (8, 6, 7)",
}
