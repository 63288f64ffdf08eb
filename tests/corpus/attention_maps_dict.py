"""Attention maps stored for visualisation in a dict keyed by the call's step counter: a new key
every call.

Provenance: https://github.com/wooyeolbaek/attention-map-diffusers/issues/6 - attention maps kept
in an `attn_maps` dict keyed by module path, then per timestep, for plotting after the run.
"""

import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qk = nn.Linear(16, 32)
        self.step = 0
        self.attn_maps = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self.qk(x).chunk(2, dim=-1)
        attn = (q @ k.transpose(-1, -2)).softmax(-1)
        self.attn_maps[self.step] = attn.detach()
        self.step += 1
        return attn @ x

    def latest_map(self) -> torch.Tensor:
        return self.attn_maps[max(self.attn_maps)]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = Attention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,8,16"],
    "dims": ["B=1:2"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "attn", "stage": "eager", "kind": "leak"}],
    "pattern": "a dict keyed by a call counter",
    "behaviour": "m = net.attn.latest_map()\nassert m.shape[-1] == 8 and torch.allclose(m.sum(-1), torch.ones(()))",
}
