"""The tiny GPT-2 of issue #9: transformers GPT2Config(n_layer=4, n_embd=64, n_head=4,
vocab_size=1000), random weights, unmodified. Its export stage under torch's default exporter is
the toolchain's growth case (torch.fx keeps each exported graph's source), and the ≤60 s target.

    python bench/stage_times.py --model bench/models/tiny_gpt2.py:Net --input ids=B,T:int64:0:1000 \\
        --dim B=1:4 --dim T=5:64 --stages export [--before DIR]
"""

from torch import nn
from transformers import GPT2Config, GPT2Model


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = GPT2Model(GPT2Config(n_layer=4, n_embd=64, n_head=4, vocab_size=1000))

    def forward(self, ids):  # type: ignore[no-untyped-def]
        return self.model(input_ids=ids, use_cache=False).last_hidden_state
