"""Rotary cos/sin tables cached per sequence length in a dict on the rotary module.

Provenance: https://github.com/openai/gpt-oss/pull/43 - added a cos/sin cache to the rotary
embedding keyed by the sequence length seen in forward.
"""

import torch
from torch import nn


class Rotary(nn.Module):
    def __init__(self, dim: int = 16, base: float = 10000.0) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, dim, 2).float() / dim), persistent=False)
        self.cos_sin = {}

    def _tables(self, seq_len: int):
        if seq_len not in self.cos_sin:
            freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), self.inv_freq)
            emb = torch.cat([freqs, freqs], dim=-1)
            self.cos_sin[seq_len] = (emb.cos(), emb.sin())
        return self.cos_sin[seq_len]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cos, sin = self._tables(x.shape[1])
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(16, 16)
        self.rope = Rotary()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rope(self.q(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,T,16"],
    "dims": ["B=1:2", "T=4:96"],
    "stages": {"eager": "shape-growth"},
    "culprits": [{"region": "rope", "stage": "eager", "kind": "shape-growth"}],
    "pattern": "a dict memo on the module keyed by length (in a helper method)",
    "behaviour": "a = net.rope._tables(11); b = net.rope._tables(11)\nassert a[0] is b[0] and a[0].shape == (11, 16)",
}
