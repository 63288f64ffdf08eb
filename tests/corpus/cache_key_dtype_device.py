"""Position embeddings cached per (height, width, dtype, device): the dtype and device are in the
key as review asked, and each new size still adds an entry for good.

Provenance: https://github.com/huggingface/transformers/pull/40329 - EfficientLoFTR's embeddings
computed per image size under an LRU cache; review asked for device and dtype in the key.
"""

import torch
from torch import nn

_EMBED_CACHE = {}


def compute_embeddings(h: int, w: int, dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (h, w, dim, dtype, str(device))
    if key not in _EMBED_CACHE:
        i = torch.ones(h, w).cumsum(0)[..., None]
        j = torch.ones(h, w).cumsum(1)[..., None]
        freq = torch.arange(dim // 2, dtype=torch.float32)
        _EMBED_CACHE[key] = torch.cat([(i * freq).sin(), (j * freq).cos()], -1).to(device=device, dtype=dtype)
    return _EMBED_CACHE[key]


class Matcher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.proj(x).permute(0, 2, 3, 1)
        return f + compute_embeddings(x.shape[-2], x.shape[-1], 16, f.dtype, f.device)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.matcher = Matcher()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matcher(x).mean((1, 2))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,3,H,W"],
    "dims": ["B=1:2", "H=4:40", "W=4:40"],
    "stages": {"eager": "shape-growth"},
    "culprits": [{"region": "matcher", "stage": "eager", "kind": "shape-growth"}],
    "pattern": "module-level dict keyed by shape, dtype and device",
    "behaviour": (
        "a = module.compute_embeddings(5, 6, 16, torch.float32, torch.device('cpu'))\n"
        "b = module.compute_embeddings(5, 6, 16, torch.float32, torch.device('cpu'))\n"
        "assert a is b and a.shape == (5, 6, 16)"
    ),
}
