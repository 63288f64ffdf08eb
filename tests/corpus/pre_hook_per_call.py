"""A pre-hook registered inside forward to inject a scaling, on every call: the child's
`_forward_pre_hooks` grows by one per call, and each closure holds its tensor.

Provenance: https://github.com/huggingface/peft/issues/1472 - the X-LoRA classifier's scalings
were injected by a pre-hook registered per generation step (fixed in peft#2761).
"""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 16)
        self.gate = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.gate(x)).mean()

        def inject(module, args):
            return (args[0] * scale,)

        self.proj.register_forward_pre_hook(inject)
        return self.proj(x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "block", "stage": "eager", "kind": "leak"}],
    "pattern": "hooks registered per call",
    # The gate still scales the input: outputs differ from the projection alone.
    "behaviour": (
        "x = inputs[-1]\n"
        "b = net.block\n"
        "out = b(x)\n"
        "plain = torch.nn.functional.linear(x, b.proj.weight, b.proj.bias)\n"
        "assert not torch.allclose(out, plain)"
    ),
}
