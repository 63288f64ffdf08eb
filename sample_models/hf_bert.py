"""A tiny BERT from Hugging Face transformers (random weights from a config, nothing downloaded),
clean (`Net`) and with a leak injected deep inside (`LeakyNet`): the second layer's intermediate
activation keeps every output in a module-level list.

Ground truth: `Net` is clean in eager and inference. `LeakyNet`:
`model.encoder.layer.1.intermediate.intermediate_act_fn` leaks in eager; inference is clean.
"""

import torch
from torch import nn
from transformers import BertConfig, BertModel

KEPT: list = []


class KeepOutputs(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        KEPT.append(y)
        return y


def _config() -> BertConfig:
    return BertConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        vocab_size=1000, max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )


class Net(nn.Module):
    """BertModel wrapped to take token ids and return the last hidden state."""

    def __init__(self) -> None:
        super().__init__()
        self.model = BertModel(_config(), add_pooling_layer=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).last_hidden_state


class LeakyNet(Net):
    def __init__(self) -> None:
        super().__init__()
        inter = self.model.encoder.layer[1].intermediate
        inter.intermediate_act_fn = KeepOutputs(inter.intermediate_act_fn)


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
        "culprits": [{"region": "model.encoder.layer.1.intermediate.intermediate_act_fn", "stage": "eager", "kind": "leak"}],
    },
]
