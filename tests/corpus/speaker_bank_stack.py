"""An enrolment bank of speaker embeddings grown with torch.cat on an attribute, one 256-float
row per utterance: 1 KB a call, with no object count growth.

Provenance: https://github.com/pytorch/tensordict/issues/1475 - memory grew while results were
concatenated with torch.cat across iterations and the growing result was kept.
"""

import torch
from torch import nn


class SpeakerEmbedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frame = nn.Linear(40, 256)
        self.bank = torch.empty(0, 256)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        emb = self.frame(feats).mean(dim=1)
        self.bank = torch.cat([self.bank, emb.detach()[:1]])
        return emb @ self.bank.T[:, -1:]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = SpeakerEmbedder()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.embed(feats)


BISECTOR_TRUTH = {
    "spec": "Net",
    "inputs": ["feats=B,8,40"],
    "dims": ["B=1:2"],
    "stages": {"eager": "leak"},
    "culprits": [{"region": "embed", "stage": "eager", "kind": "leak"}],
    "pattern": "a tensor grown by torch.cat (attribute)",
    "behaviour": "assert net.embed.bank.shape[1] == 256 and net.embed.bank.shape[0] >= 1",
}
