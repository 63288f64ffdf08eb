"""A global forward hook registered through torch.nn.modules.module on every call of a profiling
wrapper: torch's global hook registry grows by one hook per call.

Provenance: https://github.com/pytorch/pytorch/pull/124688 - torch's ModuleTracker registers
global module hooks; a wrapper that registers them per call, without removing the handle, keeps
every one (the same accumulation as huggingface/peft#2761, at global scope).
"""

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook


class Profiled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
        self.calls = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def count(module, args, output):
            name = type(module).__name__
            self.calls[name] = self.calls.get(name, 0) + 1

        register_module_forward_hook(count)
        return self.inner(x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = Profiled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "model", "stage": "eager", "kind": "leak"}],
    "pattern": "global hooks registered per call",
    "behaviour": "before = dict(net.model.calls)\nnet(inputs[-1])\nassert net.model.calls.get('Linear', 0) > before.get('Linear', 0)",
}
