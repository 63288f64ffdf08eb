"""Convert every registered model to artifacts/<name>.onnx with one export call; the settings that
differ per model live in the tables below. A model that does not convert yet is skipped (and said)."""

import importlib
import os
import sys

import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(ROOT, "artifacts")
sys.path.insert(0, ROOT)

from registry import REGISTRY  # noqa: E402

INPUT_NAMES = {"scorer": "feats", "mixer": "tokens", "denoiser": "image", "spectral": "signal"}
DYNAMIC_AXES = {
    "scorer": {"feats": {0: "batch"}},
    "mixer": {"tokens": {0: "batch", 1: "length"}},
    "denoiser": {"image": {0: "batch", 2: "height", 3: "width"}},
    "spectral": {"signal": {0: "batch"}},
}


def convert(name):
    module, cls, shape = REGISTRY[name]
    model = getattr(importlib.import_module(module), cls)().eval()
    path = os.path.join(OUT, name + ".onnx")
    torch.onnx.export(
        model,
        (torch.randn(*shape),),
        path,
        input_names=[INPUT_NAMES[name]],
        dynamic_axes=DYNAMIC_AXES[name],
        dynamo=False,
        opset_version=17,
    )
    return path


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name in REGISTRY:
        try:
            print("converted", os.path.relpath(convert(name), ROOT))
        except Exception as exc:  # a model that does not convert yet is served with torch (serve/pool.py)
            print("not converted", name, str(exc).splitlines()[0])
