"""A warning whose text carries the input length: the warnings module keeps one registry entry per
distinct message in the calling module's `__warningregistry__`.

Provenance: https://github.com/python/cpython/issues/97557 - "Memory leak: warnings module":
warnings with changing text grow the registry without bound (also POSYDON-code/POSYDON#364).
"""

import warnings

import torch
from torch import nn


class Padder(nn.Module):
    def __init__(self, multiple: int = 8) -> None:
        super().__init__()
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        pad = (-t) % self.multiple
        if pad:
            warnings.warn(f"sequence length {t} is not a multiple of {self.multiple}; padding by {pad}")
        return nn.functional.pad(x, (0, 0, 0, pad))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pad = Padder()
        self.proj = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pad(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,T,16"],
    "dims": ["B=1:2", "T=3:199"],
    "stages": {"eager": "shape-growth"},
    "culprits": [{"region": "pad", "stage": "eager", "kind": "shape-growth"}],
    "pattern": "the warnings registry of the user's module",
    "behaviour": (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    net(torch.zeros(1, 5, 16))\n"
        "assert any('padding by 3' in str(x.message) for x in w)"
    ),
}
