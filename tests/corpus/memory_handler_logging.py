"""`log.debug("...", tensor)` in forward, with a MemoryHandler that has no target: it buffers
every record, and each record keeps its tensor argument alive.

Provenance: https://github.com/Tribler/tribler/pull/8530 - a logging endpoint's MemoryHandler
kept every record until its capacity was bounded (400 records).
"""

import logging
import logging.handlers

import torch
from torch import nn

log = logging.getLogger("corpus.memory_handler")
log.setLevel(logging.DEBUG)
RECENT = logging.handlers.MemoryHandler(capacity=10**9, flushLevel=logging.CRITICAL + 1)
log.addHandler(RECENT)
log.propagate = False


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.proj(x))
        log.debug("encoder output %s", y)
        return y


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = Encoder()
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(x))


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["x=B,16"],
    "dims": ["B=1:4"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "enc", "stage": "eager", "kind": "leak"}],
    "pattern": "a logging handler that keeps every record",
    # The debug line is still logged: the newest record reads as the encoder's output.
    "behaviour": (
        "buf = module.RECENT.buffer\n"
        "assert buf and buf[-1].getMessage().startswith('encoder output')"
    ),
}
