"""A tiny GPT-2 from Hugging Face transformers (random weights from a config, nothing downloaded),
clean (`Net`) and with a leak injected deep inside (`LeakyNet`): the activation of the second
block's MLP keeps every output in a module-level list.

Ground truth: `Net` is clean in eager and inference. `LeakyNet`: `model.h.1.mlp.act` leaks in
eager; inference is clean.
"""

import torch
from torch import nn
from transformers import GPT2Config, GPT2Model

KEPT: list = []


class KeepOutputs(nn.Module):
    """Wraps a module and keeps what it returns, "to inspect activations later"."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        KEPT.append(y)
        return y


def _config() -> GPT2Config:
    return GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=128,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )


class Net(nn.Module):
    """GPT2Model wrapped to take token ids and return the last hidden state (no KV cache)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = GPT2Model(_config())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).last_hidden_state


class LeakyNet(Net):
    def __init__(self) -> None:
        super().__init__()
        mlp = self.model.h[1].mlp
        mlp.act = KeepOutputs(mlp.act)


BISECTOR_TRUTH = [
    {
        "spec": "Net",
        "inputs": ["ids=B,T:int64:0:1000"],
        "dims": ["B=1:4", "T=5:64"],
        "stages": {"eager": "clean", "export": "clean", "inference": "clean"},
        "culprits": [],
    },
    {
        "spec": "LeakyNet",
        "inputs": ["ids=B,T:int64:0:1000"],
        "dims": ["B=1:4", "T=5:64"],
        "stages": {"eager": "leak", "inference": "clean"},
        "culprits": [{"region": "model.h.1.mlp.act", "stage": "eager", "kind": "leak"}],
    },
]
