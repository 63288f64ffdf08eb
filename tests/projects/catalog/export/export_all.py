"""Export every model of the catalog service to artifacts/<name>.onnx (one export call for all)."""

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
sys.path.insert(0, str(ROOT))

from models.encoder import QueryEncoder  # noqa: E402
from models.heatmap import Heatmap  # noqa: E402
from models.ranker import Ranker  # noqa: E402
from models.tagger import Tagger  # noqa: E402

MODELS = {
    "tagger": (Tagger, (torch.randn(2, 3, 16, 16),), {"x": {0: "batch"}}),
    "encoder": (QueryEncoder, (torch.randint(0, 500, (2, 7)),), {"ids": {0: "batch", 1: "tokens"}}),
    "ranker": (Ranker, (torch.randn(3, 4),), {"x": {0: "batch"}}),
    "heatmap": (Heatmap, (torch.randn(1, 3, 24, 24),), {"x": {0: "batch", 2: "height", 3: "width"}}),
}


def export(name: str) -> Path:
    cls, example, axes = MODELS[name]
    path = ARTIFACTS / f"{name}.onnx"
    torch.onnx.export(cls().eval(), example, str(path), input_names=list(axes), dynamic_axes=axes, dynamo=False, opset_version=17)
    return path


if __name__ == "__main__":
    ARTIFACTS.mkdir(exist_ok=True)
    for name in MODELS:
        print("exported", export(name).relative_to(ROOT))
