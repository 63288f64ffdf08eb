"""A causal mask memoised with lru_cache(maxsize=None) on the sequence length: one mask per
length ever seen, kept for the life of the process.

Provenance: https://github.com/MoonshotAI/Kimi-Audio/issues/117 - `@lru_cache(maxsize=None)` on a
method returning tensors "may cause memory leakage when training data grows larger".
"""

import functools

import torch
from torch import nn


@functools.lru_cache(maxsize=None)
def causal_mask(t: int) -> torch.Tensor:
    return torch.triu(torch.full((t, t), float("-inf")), diagonal=1)


class Attention(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, dim * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = q @ k.transpose(-1, -2) / 4.0 + causal_mask(x.shape[1])
        return scores.softmax(-1) @ v


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 16)
        self.attn = Attention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.embed(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,T,16"],
    "dims": ["B=1:2", "T=4:96"],
    "stages": {"eager": "shape-growth"},
    "culprits": [{"region": "attn", "stage": "eager", "kind": "shape-growth"}],
    "pattern": "lru_cache(maxsize=None) keyed by input length",
    # The mask still hits: the same length twice is one computation.
    "behaviour": (
        "module.causal_mask.cache_clear()\n"
        "net(inputs[-1]); net(inputs[-1])\n"
        "info = module.causal_mask.cache_info()\n"
        "assert info.hits >= 1 and info.misses == 1"
    ),
}
