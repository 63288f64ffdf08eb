"""A module-level dict memo keyed by length, filled by a helper that attention calls.

Provenance: https://github.com/hao-ai-lab/FastVideo/pull/1442 - memoised rotary tables in a
module-level `_ROTARY_POS_EMBED_CACHE` dict (the pattern of `_ROPE_DICT` in the same file), never
evicted.
"""

import torch
from torch import nn

_REL_BIAS = {}


def relative_bias(t: int) -> torch.Tensor:
    if t not in _REL_BIAS:
        idx = torch.arange(t)
        _REL_BIAS[t] = -(idx[None, :] - idx[:, None]).abs().float() / t
    return _REL_BIAS[t]


class Attention(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, dim * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return ((q @ k.transpose(-1, -2)) * 0.25 + relative_bias(x.shape[1])).softmax(-1) @ v


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = Attention()
        self.norm = nn.LayerNorm(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.attn(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,T,16"],
    "dims": ["B=1:2", "T=4:96"],
    "stages": {"eager": "shape-growth"},
    "culprits": [{"region": "attn", "stage": "eager", "kind": "shape-growth"}],
    "pattern": "module-level dict memo keyed by length",
    "behaviour": "a = module.relative_bias(9); b = module.relative_bias(9)\nassert a is b and a.shape == (9, 9)",
}
