"""An embedding cache keyed by a hash of the input's bytes: a service that sees distinct inputs
adds one entry per request, for good.

Provenance: https://github.com/ai-dynamo/dynamo/pull/14452 - a vLLM encode worker kept every image
embedding it computed in a plain dict that was never evicted; the fix routed it through a
capacity-bounded LRU.
"""

import hashlib

import torch
from torch import nn


class ImageEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(48, 32)
        self.embedding_cache = {}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha1(pixels.detach().numpy().tobytes()).hexdigest()
        hit = self.embedding_cache.get(key)
        if hit is None:
            hit = torch.tanh(self.proj(pixels))
            self.embedding_cache[key] = hit
        return hit


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = ImageEncoder()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encoder(pixels)


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["pixels=B,48"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "encoder", "stage": "eager", "kind": "leak"}],
    "pattern": "a dict memo keyed by content hash",
    "behaviour": "p = inputs[-1]\na = net.encoder(p); b = net.encoder(p.clone())\nassert a is b",
}
